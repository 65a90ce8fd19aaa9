"""The fake external world a run talks to: fakeredis and recorded fakes, which outlive a crash.

A crashed engine loses its memory; the world it wrote to does not. The
harness therefore keeps one world per scenario, serves it to every life of
the run through resource overrides, and compares its final contents with the
reference run's.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from durableflow import Resource, override_resources

Fake = Callable[[], Any]
"""Builds a fake once per world: a class, or any zero-argument callable."""


class Recorder:
    """Wraps a fake so that every method call is written to the world's journal before it runs."""

    def __init__(self, target: Any, name: str, journal: Callable[[str], None]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_journal", journal)

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._target, attribute)
        if not callable(value):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._journal(_call_text(f"{self._name}.{attribute}", args, kwargs))
            return value(*args, **kwargs)

        return recorded

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._target, attribute, value)


def _call_text(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


class FakeWorld:
    """One scenario's external systems: a fakeredis server and user fakes, with a call journal.

    ``tcp=True`` serves Redis over a loopback socket so that forked processes
    (kill mode) share it, and the journal is fed by them through ``record``.
    """

    def __init__(self, fakes: Mapping[object, Fake] | None = None, record: frozenset[object] = frozenset(), tcp: bool = False) -> None:
        self.fakes = dict(fakes or {})
        self.record_keys = record
        self.calls: list[str] = []
        self.journal: Callable[[str], None] = self.calls.append
        self._built: dict[object, Any] = {}
        self._tcp = tcp
        self._tcp_server: Any = None
        self._server: Any = None
        if tcp:
            self.redis_server  # noqa: B018 - start serving now: forked children must find it in the parent

    # -- redis -----------------------------------------------------------------------

    @property
    def redis_server(self) -> Any:
        """The fakeredis server behind every Redis resource of this world."""
        if self._server is None:
            try:
                import fakeredis
            except ImportError:
                raise ImportError("the fake world needs fakeredis: pip install 'durableflow[pytest]'") from None
            if self._tcp:
                self._tcp_server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
                threading.Thread(target=self._tcp_server.serve_forever, daemon=True).start()
                self._server = self._tcp_server.fake_server
            else:
                self._server = fakeredis.FakeServer()
        return self._server

    def redis_client(self, template: Any = None, asyncio: bool = False) -> Any:
        """A client of this world's server, decoding like ``template`` (the client the real factory builds)."""
        server = self.redis_server  # first: without fakeredis, it raises naming the extra to install
        import fakeredis

        kwargs = getattr(getattr(template, "connection_pool", None), "connection_kwargs", {})
        options = {"decode_responses": bool(kwargs.get("decode_responses")), "db": int(kwargs.get("db", 0))}
        if self._tcp_server is not None:  # a real client on the shared socket, as the other processes use
            import redis
            import redis.asyncio

            host, port = self._tcp_server.server_address[:2]
            cls = redis.asyncio.Redis if asyncio else redis.Redis
            return cls(host=host, port=port, **options)
        cls = fakeredis.FakeAsyncRedis if asyncio else fakeredis.FakeRedis
        return cls(server=server, **options)

    def redis_snapshot(self) -> dict[str, Any]:
        """Every key of every database, as JSON-comparable data."""
        if self._server is None:
            return {}
        import fakeredis

        snapshot: dict[str, Any] = {}
        for db in sorted(self._server.dbs):
            client = fakeredis.FakeRedis(server=self._server, db=db)
            for key in sorted(client.keys()):
                snapshot[f"{db}:{key.decode(errors='replace')}"] = _redis_value(client, key)
        return snapshot

    # -- serving a run -------------------------------------------------------------------

    def overrides(self, resources: Iterator[tuple[Resource[Any], object]] = iter(())) -> dict[object, Fake]:
        """Resource overrides serving this world: Redis-typed resources, then the user's fakes.

        ``resources`` are the workflow's own (resource, annotation) pairs: a
        Redis-typed one gets a fake client that decodes like the client its
        real factory builds (redis-py connects lazily, so building one is free).
        """
        overrides: dict[object, Fake] = {}
        try:
            import redis
            import redis.asyncio
        except ImportError:
            pass
        else:
            overrides[redis.Redis] = lambda: self.redis_client()
            overrides[redis.asyncio.Redis] = lambda: self.redis_client(asyncio=True)
            for resource, annotation in resources:
                if isinstance(annotation, type) and issubclass(annotation, (redis.Redis, redis.asyncio.Redis)):
                    self.redis_server  # noqa: B018 - without fakeredis, fail here naming the extra, not inside a step
                    is_async = issubclass(annotation, redis.asyncio.Redis)
                    overrides[resource.factory] = lambda f=resource.factory, a=is_async: self.redis_client(_template(f), a)
        for key in self.fakes:
            overrides[key] = lambda key=key: self._fake(key)
        return overrides

    @contextmanager
    def serving(self, resources: Iterator[tuple[Resource[Any], object]] = iter(())) -> Iterator[None]:
        """Runs started or resumed inside the block talk to this world."""
        with override_resources(self.overrides(resources)):
            yield

    def _fake(self, key: object) -> Any:
        if key not in self._built:
            fake = self.fakes[key]()
            if key in self.record_keys:
                fake = Recorder(fake, _name_of(key), lambda text: self.journal(text))
            self._built[key] = fake
        return self._built[key]

    # -- comparing worlds ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        calls = Counter(self.calls)
        for call in calls:
            if "idempotency_key=" in call:  # the receiver dedupes by the key: the same request again is one request
                calls[call] = 1
        return {"redis": self.redis_snapshot(), "calls": dict(calls)}

    def reset(self) -> None:
        """Empty the world for the next scenario (one server serves a whole exploration)."""
        if self._server is not None:
            import fakeredis

            fakeredis.FakeRedis(server=self._server).flushall()
        self.calls.clear()
        self._built.clear()

    def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.shutdown()
            self._tcp_server.server_close()
            self._tcp_server = None


def _template(factory: Callable[[], Any]) -> Any:
    try:
        client = factory()
    except Exception:  # a factory that needs the real server: fall back to redis-py's defaults
        return None
    if inspect.iscoroutine(client):  # an async factory: not worth a loop to learn its options
        client.close()
        return None
    return client


def _name_of(key: object) -> str:
    return str(getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or key)


def _redis_value(client: Any, key: bytes) -> Any:
    kind = client.type(key).decode()
    if kind == "string":
        value: Any = client.get(key)
    elif kind == "list":
        value = client.lrange(key, 0, -1)
    elif kind == "hash":
        # JSON object keys must be text
        value = {field.decode(errors="replace"): v for field, v in sorted(client.hgetall(key).items())}
    elif kind == "set":
        value = sorted(client.smembers(key))
    elif kind == "zset":
        value = client.zrange(key, 0, -1, withscores=True)
    else:
        value = f"<{kind}>"
    return {"type": kind, "value": json.loads(json.dumps(value, default=_text))}


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)
