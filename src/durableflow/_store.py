"""``ctx.store``: a run's state, kept as JSON text per top-level key so checkpoints write only what changed.

Values are copied in and out: ``get`` decodes a fresh copy, so mutating it
changes nothing until it is ``set`` back, exactly as with a database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar, cast, final

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._errors import SerializationError, StateKeyError, WorkflowRuntimeError, WorkflowValidationError
from ._serialization import ValueCodec, check_text, non_finite, refuse_non_finite
from ._serializers import JsonSerializer

StateT = TypeVar("StateT")

_MISSING: Any = object()


@final
class StateStore(Generic[StateT]):
    """Key-value state shared by a run's steps, optionally typed by a pydantic model."""

    __slots__ = ("_adapters", "_codec", "_editing", "_holder", "_lock", "_own", "_state_type", "dirty", "values")
    dirty: set[str] | tuple[()]

    def __init__(self, initial: BaseModel | Mapping[str, Any] | None = None) -> None:
        """A store outside any run, starting from ``initial``: a typed model (its type becomes the state
        type) or a mapping for untyped state. What steps see as ``ctx.store``, for tests of code that takes one."""
        typed = isinstance(initial, BaseModel)
        self._setup(ValueCodec({}), type(initial) if typed else None, None)  # type: ignore[arg-type]
        self._own = True
        self._replace(self._encode_state(initial if typed else dict(initial or {})))
        self.dirty = ()

    @classmethod
    def _of_run(
        cls, codec: ValueCodec, state_type: type[BaseModel] | None = None, values: dict[str, str] | None = None
    ) -> StateStore[Any]:
        """A run's store: values are JSON texts by top-level key, as snapshots hold them."""
        store: StateStore[Any] = cls.__new__(cls)
        store._setup(codec, state_type, values)
        return store

    def _setup(self, codec: ValueCodec, state_type: type[BaseModel] | None, values: dict[str, str] | None) -> None:
        self._own = False  # outside any run: its state type may become a subclass (a run's is the declared one)
        self._codec = codec
        self._state_type = state_type
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        self.values: dict[str, str] = values if values is not None else self._initial_values()
        """Top-level key -> JSON text; read by the snapshot encoder."""
        self.dirty = ()
        """Keys set or deleted since the last checkpoint (a set once there is one: a run in flight that has set
        nothing keeps no empty set for the garbage collector)."""
        self._lock: asyncio.Lock | None = None
        self._holder: asyncio.Task[Any] | None = None
        self._editing: Any = None  # the state the holder's outermost edit_state block is changing

    # -- reading -------------------------------------------------------------------

    async def get(self, path: str, default: Any = _MISSING) -> Any:
        """The value at ``path`` (``"a"`` or ``"a.b.0"``); ``default`` or ``StateKeyError`` (a ``KeyError`` and a
        ``ValueError``) when absent."""
        key, _, rest = path.partition(".")
        text = self.values.get(key)
        if text is None:
            if default is _MISSING:
                raise StateKeyError(path)
            return default
        value = self._decode(key, text)
        if rest:
            try:
                value = _walk(value, rest.split("."))
            except (KeyError, IndexError, AttributeError, ValueError):
                if default is _MISSING:
                    raise StateKeyError(path) from None
                return default
        return value

    async def get_state(self) -> StateT:
        """The whole state: a fresh model instance when typed, else a dict copy."""
        return cast(StateT, self._snapshot_state())  # the model or dict this run's Context[StateT] declares

    # -- writing -------------------------------------------------------------------

    async def set(self, path: str, value: Any) -> None:
        """Store ``value`` at ``path``; a ``SerializationError`` here names the key and type."""
        await self._wait_for_writer()
        key, _, rest = path.partition(".")
        if rest:
            top = self._decode(key, self.values[key]) if key in self.values else {}
            parent = _walk(top, rest.split(".")[:-1], create=True)
            _assign(parent, rest.rsplit(".", 1)[-1], value)
            value = top
        self._put(key, value)

    async def delete(self, key: str) -> None:
        """Remove a top-level key (typed state resets it to the model's default)."""
        await self._wait_for_writer()
        if self._state_type is not None:
            self._put(key, self._field_default(key))
        elif self.values.pop(key, None) is not None:
            self._changed(key)

    async def clear(self) -> None:
        """Remove every key (typed state returns to the model's defaults)."""
        await self._wait_for_writer()
        self._replace(self._initial_values())

    async def set_state(self, state: StateT) -> None:
        """Replace the whole state with ``state`` (a model instance when typed, else a mapping)."""
        await self._wait_for_writer()
        self._replace(self._encode_state(state))

    @asynccontextmanager
    async def edit_state(self) -> AsyncIterator[StateT]:
        """Read-modify-write the whole state; concurrent editors and setters wait their turn."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        task = asyncio.current_task()
        if self._holder is task:  # nested edit in the same step: no second lock, and the
            yield self._editing  # same state, so neither block overwrites the other's changes
            return
        async with self._lock:
            self._holder = task
            try:
                state = self._editing = self._snapshot_state()
                yield state
                self._replace(self._encode_state(state))
            finally:
                self._holder = self._editing = None

    # -- saving by hand ----------------------------------------------------------------

    def to_dict(self, serializer: JsonSerializer | None = None) -> dict[str, Any]:
        """The state as llama-index-workflows' ``InMemoryStateStore.to_dict`` lays it out (``store_type``,
        ``state_type``, ``state_module``, ``state_data``), through ``serializer`` (JSON by default)."""
        from ._state_codec import store_to_dict  # the codec builds on this module

        return store_to_dict(self, serializer or JsonSerializer())

    @classmethod
    def from_dict(cls, data: dict[str, Any], serializer: JsonSerializer | None = None) -> StateStore[Any]:
        """A store holding the state ``to_dict`` saved; ``ValueError`` for another store's payload."""
        from ._state_codec import store_from_dict

        return store_from_dict(data, serializer or JsonSerializer())

    # -- internals -------------------------------------------------------------------

    async def _wait_for_writer(self) -> None:
        if self._holder is None:
            return
        if self._holder is asyncio.current_task():
            raise WorkflowRuntimeError(
                "this step is inside ctx.store.edit_state(): change the state object it gave you instead, "
                "or its write-back at the end of the block would undo this change"
            )
        assert self._lock is not None
        async with self._lock:
            pass

    def _put(self, key: str, value: Any) -> None:
        if not key.isascii():
            check_text(key, f"state key {key!r}")
        if self._state_type is None:
            text = self._codec.dump(value, f"state key {key!r} (a {type(value).__name__})")
        else:
            adapter = self._adapter(key)
            try:
                validated = adapter.validate_python(value)
            except ValidationError as exc:
                raise SerializationError(f"cannot store state key {key!r}: {exc}") from None
            text = _typed_json(adapter, validated, f"state key {key!r}")
        self.values[key] = text
        self._changed(key)

    def _changed(self, key: str) -> None:
        """``key`` was set or deleted: the next checkpoint writes it."""
        dirty = self.dirty
        if isinstance(dirty, tuple):
            self.dirty = dirty = set()
        dirty.add(key)

    def _replace(self, values: dict[str, str]) -> None:
        for key in self.values.keys() - values.keys():
            self._changed(key)
            del self.values[key]
        for key, text in values.items():
            if self.values.get(key) != text:
                self.values[key] = text
                self._changed(key)

    def _decode(self, key: str, text: str) -> Any:
        if self._state_type is None:
            return self._codec.load(text)
        return self._adapter(key).validate_json(text)

    def _snapshot_state(self) -> Any:
        if self._state_type is None:
            return DictState({key: self._codec.load(text) for key, text in self.values.items()})
        body = ",".join(f"{json.dumps(key)}:{text}" for key, text in self.values.items())
        return self._state_type.model_validate_json("{" + body + "}")

    def _encode_state(self, state: Any) -> dict[str, str]:
        if self._state_type is None:
            if not isinstance(state, Mapping):
                raise SerializationError(f"untyped state must be a mapping, not {type(state).__name__}")
            return {
                str(key): self._codec.dump(value, f"state key {key!r} (a {type(value).__name__})")
                for key, value in state.items()
            }
        if self._own and isinstance(state, self._state_type) and type(state) is not self._state_type:
            self._state_type, self._adapters = type(state), {}  # keep what the subclass adds; clear() resets to it
        if (
            isinstance(state, BaseModel)
            and not isinstance(state, self._state_type)
            and issubclass(self._state_type, type(state))
        ):  # an instance of a base of the state type: its fields replace those, the others stay
            state = self._snapshot_state().model_copy(update=dict(state))
        if not isinstance(state, self._state_type):
            raise SerializationError(
                f"state must be of type {self._state_type.__name__} (or a base of it), not {type(state).__name__}"
            )
        try:
            state = self._state_type.model_validate(state.model_dump(warnings=False))
        except ValidationError as exc:
            raise SerializationError(f"cannot store the state: {exc}") from None
        return {
            name: _typed_json(self._adapter(name), getattr(state, name), f"state key {name!r}")
            for name in self._state_type.model_fields
        }

    def _initial_values(self) -> dict[str, str]:
        if self._state_type is None:
            return {}
        try:
            return self._encode_state(self._state_type())
        except ValidationError as exc:
            raise WorkflowValidationError(
                f"state type {self._state_type.__name__} needs a default for every field: {exc}"
            ) from None

    def _field_default(self, key: str) -> Any:
        assert self._state_type is not None
        return getattr(self._state_type(), key)

    def _adapter(self, key: str) -> TypeAdapter[Any]:
        adapter = self._adapters.get(key)
        if adapter is None:
            assert self._state_type is not None
            field = self._state_type.model_fields.get(key)
            if field is None:
                raise WorkflowRuntimeError(f"{self._state_type.__name__} has no field {key!r}")
            # rebuild_annotation keeps the field's constraints (Field(ge=0)...), so set() enforces them too
            adapter = self._adapters[key] = TypeAdapter(field.rebuild_annotation())
        return adapter


def _typed_json(adapter: TypeAdapter[Any], value: Any, where: str) -> str:
    """A typed state field's value as JSON text, refused when it would not read back as it is."""
    try:
        text = adapter.dump_json(value).decode()
    except PydanticSerializationError as exc:  # a lone surrogate, nesting past pydantic's limit
        raise SerializationError(f"cannot store {where}: {exc}") from None
    if "null" in text and (found := non_finite(adapter.dump_python(value))) is not None:  # NaN is written as null
        raise refuse_non_finite(found, where)
    check_text(text, where)
    return text


def in_memory_state_store(initial: BaseModel | Mapping[str, Any] | None = None) -> StateStore[Any]:
    """``StateStore(initial)``: a state store outside any run."""
    return StateStore(initial)


class DictState(dict[str, Any]):
    """Untyped state as ``edit_state()`` and ``get_state()`` give it: a dict whose keys read as attributes too
    (``state.count += 1``), as in llama-index-workflows (``state._data`` is the dict itself)."""

    def __getattr__(self, name: str) -> Any:
        if name == "_data":
            return self
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None


def _walk(value: Any, parts: list[str], create: bool = False) -> Any:
    for part in parts:
        if isinstance(value, dict):
            if create and part not in value:
                value[part] = {}
            value = value[part]
        elif isinstance(value, list):
            value = value[int(part)]
        else:
            value = getattr(value, part)
    return value


def _assign(container: Any, part: str, value: Any) -> None:
    if isinstance(container, dict):
        container[part] = value
    elif isinstance(container, list):
        container[int(part)] = value
    else:
        setattr(container, part, value)
