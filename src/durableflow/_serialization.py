"""How values are stored: as JSON text, checked when stored, decoded without importing anything.

JSON data goes as is; an event of a type the workflow declares goes as
``{"__event__": "<type>", "data": {...}}`` and comes back as that event.
Nothing else is accepted, so a snapshot can never name code to run. What is
accepted comes back unchanged: a value that would not (a float that is not
finite, a lone surrogate, nesting deeper than ``MAX_DEPTH``, a key that is not
a string) is refused when stored, and a user's dict with a key like the event
tag is stored with that key escaped (one more leading underscore) and restored as it was.
"""

from __future__ import annotations

import base64
import json
import math
import pickle
import re
import types
import typing
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any, final

from ._errors import SerializationError, SnapshotError
from ._events import Event, load_event, type_key

EVENT_TAG = "__event__"
PICKLED = "\0pickle"
"""The event-tag kind of a value stored as a pickle (only with ``serializer=PickleSerializer()``)."""

MAX_DEPTH = 200
"""How deeply a stored value may nest lists and objects: any deeper and loading it back could exhaust the stack."""

_HINT = (
    "store JSON data (dict, list, str, int, float, bool, None), an event the workflow declares, "
    "or declare a typed state model with Context[State]"
)

compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""JSON text without spaces; built once, since ``json.dumps`` with options builds an encoder per call."""


_NONE = object()
_NESTED = (dict, list, tuple)
_TAG_LIKE = re.compile(r"_*__event__")
"""Keys a user's dict must not hold as they are: the tag itself, and the escaped forms of it (more underscores)."""
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """How deeply the JSON ``text`` nests arrays and objects (strings skipped), without parsing it."""
    if text.count("[") + text.count("{") < MAX_DEPTH:
        return 0  # too few brackets to reach the limit: the common case, at the cost of two counts
    depth = deepest = 0
    for token in _TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in "]}":
            depth -= 1
    return deepest


def check_text(text: str, where: str) -> None:
    """Refuse JSON ``text`` that could not be read back as it was: nested too deeply, or not valid Unicode."""
    check_unicode(text, where)
    if json_depth(text) > MAX_DEPTH:
        raise SerializationError(
            f"cannot store {where}: it nests lists and dicts more than {MAX_DEPTH} levels deep, "
            "more than a resume could read back; flatten it"
        )


_ESCAPED = ("\n", '"', "\\", "\t", "\r", *(chr(c) for c in range(32) if chr(c) not in "\n\t\r"))
"""What a JSON string escapes (``encode_basestring`` does no more), the likeliest first."""


def json_string(text: str) -> str:
    """``text`` as a JSON string literal, as ``json.encoder.encode_basestring`` writes it. That one copies a
    string character by character (about 1.5 ms a megabyte); a long string with nothing to escape, base64 say,
    is found so by a fast search for each character it would escape, and quoted as it is."""
    if len(text) >= 4096:
        for char in _ESCAPED:
            if char in text:
                break
        else:
            return '"' + text + '"'
    return encode_basestring(text)


def check_unicode(text: str, where: str) -> None:
    """Refuse ``text`` holding a lone surrogate: no store can hold it as text (an ASCII string is known at once)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"cannot store {where}: it holds {text[exc.start : exc.end]!r}, a lone surrogate that no "
                "store can hold as text; decode bytes with errors='replace', or store them as base64"
            ) from None


def non_finite(value: Any) -> float | None:
    """The first float in ``value`` (nested in dicts, lists and tuples) that is NaN or infinite, else ``None``."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return item
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return None


def refuse_non_finite(value: float, where: str) -> SerializationError:
    return SerializationError(
        f"cannot store {where}: it holds the float {value!r}, which JSON cannot hold (it would come back as "
        "null); store it as a string, or None"
    )


def _non_string_key(value: Any) -> Any:
    """The first dict key in ``value`` that is not a string, or ``_NONE``."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return key
                if isinstance(inner, _NESTED):
                    pending.append(inner)
        elif isinstance(item, list | tuple):
            pending.extend(inner for inner in item if isinstance(inner, _NESTED))
    return _NONE


def _escape_tags(value: Any) -> Any:
    """``value`` with each dict key that looks like the event tag given one more leading underscore."""
    if isinstance(value, dict):
        return {
            ("_" + k if isinstance(k, str) and _TAG_LIKE.fullmatch(k) else k): _escape_tags(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_escape_tags(item) for item in value]
    return value


def _has_tag_key(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if any(isinstance(key, str) and _TAG_LIKE.fullmatch(key) for key in item):
                return True
            pending.extend(inner for inner in item.values() if isinstance(inner, _NESTED))
        elif isinstance(item, list | tuple):
            pending.extend(inner for inner in item if isinstance(inner, _NESTED))
    return False


_UNTYPED: dict[type, tuple[str, ...]] = {}
"""Per event class, its declared fields that take any value (``Any``, ``object``, ``dict``, ``list[Any]``...):
pydantic writes what they hold as JSON and reads the JSON back as it is, so only JSON data survives them."""


def _untyped_fields(cls: type[Event]) -> tuple[str, ...]:
    names = _UNTYPED.get(cls)
    if names is None:
        names = _UNTYPED[cls] = tuple(name for name, f in cls.__pydantic_fields__.items() if _untyped(f.annotation))
    return names


def _untyped(annotation: Any) -> bool:
    if annotation in (Any, object, dict, list):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (dict, list):
        return all(arg in (Any, str) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return any(_untyped(arg) for arg in args if arg is not type(None))
    return False


def _not_json(value: Any) -> tuple[str, Any] | None:
    """What in ``value`` JSON would give back as something else, as ``("key", key)`` for a dict key that is not
    a string or ``("value", item)`` for a datetime, a set, a model, an event...; ``None`` if nothing. Tuples
    come back as lists, as ``ctx.store`` documents."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str | int | float) or item is None:  # bool is an int
            continue
        if isinstance(item, dict):  # a dict of its own kind (DictState, say) comes back a dict, and equal
            for key in item:
                if not isinstance(key, str):
                    return "key", key
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
        else:
            return "value", item
    return None


def refuse_not_json(event: Event) -> None:
    """``SerializationError`` if a field of ``event`` that takes any value (an undeclared one, or one declared
    ``Any``) holds what a resume would read back as something else: a start event given a datetime would see
    a string after a restart."""
    cls = type(event)
    fields = [(name, event.__dict__[name]) for name in _untyped_fields(cls)]
    if event.__pydantic_extra__:
        fields += event.__pydantic_extra__.items()
    for name, value in fields:
        found = _not_json(value)
        if found is None:
            continue
        kind, item = found
        held = type(item)
        if kind == "key":
            what = f"a dict key {item!r} of type {held.__name__}, which a resume would read back as a string"
            declared = f"dict[{held.__name__}, ...]"
        else:
            shown = held.__qualname__ if held.__module__ == "builtins" else f"{held.__module__}.{held.__qualname__}"
            what = f"a {shown}, which a resume would read back as JSON gives it (a string, a list or a dict)"
            declared = held.__name__
        raise SerializationError(
            f"cannot store a {cls.__name__}: its field {name!r} holds {what}; put JSON data in it (a model's "
            ".model_dump(mode='json'), a datetime's .isoformat(), str keys), or declare the field with its type "
            f"on an event class of your own, which reads it back as one (class My{cls.__name__}({cls.__name__}): "
            f"{name}: {declared})"
        )


@final
class ValueCodec:
    """Encodes and decodes stored values for one workflow, knowing the event types it declares."""

    def __init__(self, types: Mapping[str, type[Event]], pickles: bool = False) -> None:
        self.types = types
        self.pickles = pickles  # only with an explicit serializer=PickleSerializer(): unpickling runs code
        self._encode = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=self._event_as_json
        ).encode

    def dump(self, value: Any, where: str) -> str:
        """``value`` as compact JSON text; ``SerializationError`` names ``where`` and what cannot be stored."""
        if type(value) is str:  # no nesting, keys or tags to look for: a long text is not scanned for them
            text = json_string(value)
            check_unicode(text, where)
            return text
        try:
            text = self._encode(value)
        except RecursionError:
            raise SerializationError(
                f"cannot store {where}: it nests more than {MAX_DEPTH} levels deep (or refers to itself); flatten it"
            ) from None
        except ValueError as exc:
            if "Out of range float" in str(exc):
                found = non_finite(value)
                raise refuse_non_finite(found if found is not None else math.nan, where) from None
            raise SerializationError(f"cannot store {where}: {exc}; {_HINT}") from None
        except SerializationError as exc:  # from an event inside the value
            raise SerializationError(f"cannot store {where}: {exc}") from None
        except TypeError as exc:
            raise SerializationError(f"cannot store {where}: {exc}; {_HINT}") from None
        check_text(text, where)
        if "{" in text and (key := _non_string_key(value)) is not _NONE:
            # JSON would turn it into a string silently, and 1 and "1" into one key
            raise SerializationError(
                f"cannot store {where}: a dict key {key!r} of type {type(key).__name__} is not a string; "
                "JSON keys are strings, so convert the keys (str(key)) or store a list of pairs"
            )
        if EVENT_TAG in text and _has_tag_key(value):
            text = self._encode(_escape_tags(value))  # rare: a user's dict shaped like the tag comes back as a dict
        return text

    def load(self, text: str) -> Any:
        """The value ``dump`` wrote; events come back as instances of the declared type."""
        if EVENT_TAG not in text:
            return json.loads(text)
        return json.loads(text, object_hook=self._event_from_json)

    def _event_as_json(self, obj: Any) -> Any:
        cls = type(obj)
        if isinstance(obj, Event) and self.types.get(type_key(cls)) is cls:
            if (found := non_finite(obj.model_dump())) is not None:
                raise refuse_non_finite(found, f"the {cls.__name__} in it")
            refuse_not_json(obj)
            data = obj.model_dump(mode="json")
            return {EVENT_TAG: type_key(cls), "data": _escape_tags(data) if _has_tag_key(data) else data}
        if self.pickles:
            return {EVENT_TAG: PICKLED, "data": {"pickle": base64.b64encode(pickle.dumps(obj)).decode()}}
        raise TypeError(f"a {cls.__module__}.{cls.__qualname__} is not JSON")

    def _event_from_json(self, obj: dict[str, Any]) -> Any:
        if EVENT_TAG in obj:
            if len(obj) != 2 or "data" not in obj or not isinstance(obj["data"], dict):
                raise SnapshotError(f"a stored value holds a malformed event tag: {str(obj)[:80]}")
            if obj[EVENT_TAG] == PICKLED:
                if not self.pickles:
                    raise SnapshotError(
                        "a stored value is a pickle; loading it runs code, so it loads only with "
                        "serializer=PickleSerializer()"
                    )
                return pickle.loads(base64.b64decode(obj["data"]["pickle"]))
            cls = self.types.get(obj[EVENT_TAG]) if isinstance(obj[EVENT_TAG], str) else None
            if cls is None:
                raise SnapshotError(
                    f"a stored value names event type {obj[EVENT_TAG]!r}, which the workflow does not declare"
                )
            return load_event(cls, obj["data"], self.types)
        if any(_TAG_LIKE.fullmatch(key) for key in obj):
            return {key[1:] if _TAG_LIKE.fullmatch(key) else key: value for key, value in obj.items()}
        return obj
