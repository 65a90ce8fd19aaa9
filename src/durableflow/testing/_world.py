"""The fake external world a run talks to: fakeredis and the user's fakes, which outlive a crash.

A crashed engine loses its memory; the world it wrote to does not. The
harness therefore keeps one world per scenario, serves it to every life of
the run through resource overrides, and compares its final contents with the
reference run's. With ``shared=True`` (kill mode) the world lives in the
parent process: fakeredis behind a loopback socket, the user's fakes behind a
``multiprocessing`` manager, so that every forked life talks to the same one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.managers import BaseManager
from typing import Any, final

from durableflow import override_resources

Fake = Callable[[], Any]
"""Builds a fake once per world: a class, or any zero-argument callable."""


@final
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

        @functools.wraps(value)  # keeps the method's signature: ctx.effect reads it for idempotency_key
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self._journal(_call_text(f"{self._name}.{attribute}", args, kwargs))
            return value(*args, **kwargs)

        return recorded

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._target, attribute, value)

    def __dir__(self) -> list[str]:  # a manager's proxy exposes the methods dir() lists
        return dir(self._target)


class _Signed:
    """A forked life's proxy to a fake that lives in the parent, showing the fake's own method signatures.

    A manager's proxy methods take ``*args, **kwargs``; ``ctx.effect`` reads a
    function's signature to decide whether to hand it ``idempotency_key``.
    """

    def __init__(self, proxy: Any, template: Any) -> None:
        self._proxy = proxy
        self._template = template  # this process's copy of the fake: for its signatures only

    def __getattr__(self, attribute: str) -> Any:
        method = getattr(self._proxy, attribute)
        original = getattr(self._template, attribute, None)
        if not callable(original):
            return method

        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


_KEYED = re.compile(r"[(, ]idempotency_key=(?!None[,)])")
"""A call text that passes an idempotency key (``None`` is none)."""


def _call_text(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


class FakeRedisFor:
    """The override for a Redis type: a client of the world's server, configured like the real one.

    ``durableflow`` hands it each factory it replaces (``for_resource``); the
    factory's client is built once (redis-py connects lazily) to read its
    options, so a workflow decoding responses gets text, as it would.
    """

    def __init__(self, world: FakeWorld, asyncio: bool) -> None:
        self._world = world
        self._asyncio = asyncio
        self._options: dict[Callable[[], Any], dict[str, Any]] = {}

    def __call__(self) -> Any:
        """A resource whose factory is the Redis class itself (``Resource(redis.Redis)``) matches this
        override as its factory, not its type, so ``durableflow`` calls it instead of ``for_resource``."""
        return self._world.redis_client(asyncio=self._asyncio)

    def for_resource(self, factory: Callable[[], Any]) -> Callable[[], Any]:
        options = self.options(factory)
        self._world.served_redis_options = options
        return lambda: self._world.redis_client(options, self._asyncio)

    def options(self, factory: Callable[[], Any]) -> dict[str, Any]:
        """How the client ``factory`` builds decodes and which database it uses: learnt once per factory
        (building a redis-py client costs more than a short run), then remembered by every life."""
        options = self._options.get(factory)
        if options is None:
            kwargs = getattr(getattr(_template(factory), "connection_pool", None), "connection_kwargs", {})
            options = self._options[factory] = {
                "decode_responses": bool(kwargs.get("decode_responses")),
                "db": int(kwargs.get("db", 0)),
            }
        return options


@final
class FakeWorld:
    """One scenario's external systems: a fakeredis server and the user's fakes, with a call journal."""

    def __init__(
        self,
        fakes: Mapping[object, Fake] | None = None,
        record: frozenset[object] = frozenset(),
        shared: bool = False,
        redis: bool = True,
    ) -> None:
        self.fakes = dict(fakes or {})
        self.record_keys = record
        self.calls: list[str] = []
        self._keys = list(self.fakes)
        self._built: dict[object, Any] = {}  # the fakes themselves
        self._served: dict[object, Any] = {}  # what runs get: each fake, behind a Recorder if recorded
        self._lock = threading.Lock()
        self._shared = shared
        self._home = os.getpid()
        self._tcp_server: Any = None
        self._tcp_address: tuple[str, int] | None = None
        self.served_redis_options: dict[str, Any] | None = None
        """How the Redis client last served in place of a real one decodes (``fake_redis`` follows it)."""
        self._server: Any = None
        self._registry: Any = None
        self._registry_client: Any = None
        self._clients: dict[int, Any] = {}
        self._overrides: dict[object, Any] | None = None
        if shared:  # start serving now: forked lives must find the world in the parent
            try:
                self.overrides()
                if redis:
                    self.redis_server  # noqa: B018
                if self.fakes:
                    self._serve_fakes()
            except BaseException:
                self.close()  # a server already started would outlive a world nobody can close
                raise

    # -- redis -----------------------------------------------------------------------

    @property
    def redis_server(self) -> Any:
        """The fakeredis server behind every Redis resource of this world."""
        if self._server is None:
            try:
                import fakeredis
            except ImportError:
                raise ImportError("the fake world needs fakeredis: pip install 'durableflow[pytest]'") from None
            if self._shared:
                self._tcp_server = _tcp_server(fakeredis)
                self._tcp_address = self._tcp_server.server_address[:2]
                threading.Thread(target=self._tcp_server.serve_forever, args=(0.05,), daemon=True).start()
                self._server = self._tcp_server.fake_server
            else:
                self._server = fakeredis.FakeServer()
        return self._server

    def redis_client(self, options: Mapping[str, Any] | None = None, asyncio: bool = False) -> Any:
        """A client of this world's server with ``options`` (``decode_responses``, ``db``) of the real client."""
        options = {"decode_responses": False, "db": 0, **(options or {})}
        if self._tcp_address is None:
            self.redis_server  # noqa: B018 - without fakeredis, it raises naming the extra to install
        if self._tcp_address is not None:  # a real client on the shared socket, as the other processes use
            import redis
            import redis.asyncio

            host, port = self._tcp_address
            client_cls: Any = redis.asyncio.Redis if asyncio else redis.Redis
            return client_cls(host=host, port=port, **options)
        import fakeredis

        fake_cls: Any = fakeredis.FakeAsyncRedis if asyncio else fakeredis.FakeRedis
        return fake_cls(server=self.redis_server, **options)

    def redis_snapshot(self) -> dict[str, Any]:
        """Every key of every database, as JSON-comparable data."""
        snapshot: dict[str, Any] = {}
        for db, client in self._databases():
            for key in sorted(client.keys()):
                snapshot[f"{db}:{key.decode(errors='replace')}"] = _redis_value(client, key)
        return snapshot

    def _databases(self) -> Iterator[tuple[int, Any]]:
        """A client of each database the server holds, built once per database."""
        if self._server is None:
            return
        import fakeredis

        for db in sorted(self._server.dbs):
            if db not in self._clients:
                self._clients[db] = fakeredis.FakeRedis(server=self._server, db=db)
            yield db, self._clients[db]

    # -- the user's fakes ------------------------------------------------------------------

    def _fake(self, key: object) -> Any:
        if self._registry is not None and os.getpid() != self._home:  # a forked life: the fake lives in the parent
            if self._registry_client is None:
                registry, address, authkey = self._registry
                self._registry_client = registry(address=address, authkey=authkey)
                self._registry_client.connect()
            return _Signed(self._registry_client.fake(self._keys.index(key)), self._built[key])
        return self._fake_here(key)

    def _fake_here(self, key: object) -> Any:
        with self._lock:
            if key not in self._served:
                if key not in self._built:
                    self._built[key] = self.fakes[key]()
                fake = self._built[key]
                self._served[key] = (
                    Recorder(fake, _name_of(key), self.calls.append) if key in self.record_keys else fake
                )
            return self._served[key]

    def address(self) -> dict[str, Any]:
        """Where another process finds this shared world: what ``FakeWorld.reached`` takes."""
        registry = None if self._registry is None else self._registry[1:]
        return {"fakes": self.fakes, "record": self.record_keys, "redis": self._tcp_address, "registry": registry}

    @classmethod
    def reached(cls, address: dict[str, Any]) -> FakeWorld:
        """The world that ``address`` names, as seen from another interpreter: its lives reach it over sockets."""
        world = cls(address["fakes"], address["record"])
        world._tcp_address = address["redis"]
        world._home = -1  # nowhere here: every fake is the shared world's
        if address["registry"] is not None:
            registry: Any = type("FakeRegistry", (BaseManager,), {})
            registry.register("fake")
            world._registry = (registry, *address["registry"])
            world._built.update((key, factory()) for key, factory in world.fakes.items())  # for signatures
        return world

    def _serve_fakes(self) -> None:
        registry: Any = type("FakeRegistry", (BaseManager,), {})
        registry.register("fake", callable=lambda index: self._fake_here(self._keys[index]))
        authkey = secrets.token_bytes(16)
        # A Unix socket: over TCP, multiprocessing's two-part messages meet Nagle and delayed ACKs (40 ms stalls).
        self._socket_dir = tempfile.mkdtemp(prefix="durableflow-fakes-")
        address = os.path.join(self._socket_dir, "fakes.sock")
        server = registry(address=address, authkey=authkey).get_server()

        def serve() -> None:
            with contextlib.suppress(SystemExit):  # how a manager's server says it stopped
                server.serve_forever()

        threading.Thread(target=serve, daemon=True, name="durableflow-fakes").start()
        self._registry = (registry, server.address, authkey)
        self._registry_server = server

    # -- serving a run -------------------------------------------------------------------

    def overrides(self) -> dict[object, Any]:
        """Resource overrides serving this world: Redis types, then the user's fakes.

        Built once, in the process that made the world: a forked life must not pay for importing redis.
        """
        if self._overrides is not None:
            return self._overrides
        overrides: dict[object, Any] = {}
        try:
            import redis
            import redis.asyncio
        except ImportError:
            pass
        else:
            overrides[redis.Redis] = FakeRedisFor(self, asyncio=False)
            overrides[redis.asyncio.Redis] = FakeRedisFor(self, asyncio=True)
        for key in self.fakes:
            overrides[key] = lambda key=key: self._fake(key)
        self._overrides = overrides
        return overrides

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Runs started or resumed inside the block talk to this world."""
        with override_resources(self.overrides()):
            yield

    # -- comparing worlds ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        calls = Counter(self.calls)
        for call in calls:
            if _KEYED.search(call):  # the receiver dedupes by the key: the same request again is one request
                calls[call] = 1
        return {"redis": self.redis_snapshot(), "calls": dict(calls)}

    def reset(self) -> None:
        """Empty the world for the next scenario (one server serves a whole exploration)."""
        for _, client in self._databases():
            client.flushall()
            break  # one FLUSHALL empties every database
        self.calls.clear()
        with self._lock:
            self._built.clear()
            self._served.clear()
            if self._registry is not None:  # built now, so that every forked life holds a copy to read signatures from
                self._built.update((key, factory()) for key, factory in self.fakes.items())

    def capture(self) -> dict[str, Any]:
        """The world as it stands: every Redis key dumped byte for byte, a copy of each fake, the calls so far."""
        redis = {
            (db, key): (client.dump(key), client.pttl(key))
            for db, client in self._databases()
            for key in client.keys()  # noqa: SIM118 - Redis KEYS, not a dict
        }
        memo: dict[int, Any] = {}  # one memo for all: fakes that share an object still share its copy
        fakes = {}
        with self._lock:
            for key, fake in self._built.items():
                try:
                    fakes[key] = copy.deepcopy(fake, memo)
                except Exception as exc:
                    raise UncopyableWorld(
                        f"the harness copies your fakes at every crash point, so they must be deep-copyable: copying "
                        f"the fake for {_name_of(key)} (a {type(fake).__name__}) raised {type(exc).__name__}: {exc}"
                    ) from exc
        return {"redis": redis, "fakes": fakes, "calls": list(self.calls)}

    def restore(self, state: dict[str, Any]) -> None:
        """Make the world what ``capture`` saw (each capture is restored once, so it is used as is)."""
        self.reset()
        clients = dict(self._databases())
        for (db, key), (dumped, ttl) in state["redis"].items():
            clients[db].restore(key, max(ttl, 0), dumped)
        with self._lock:
            self._built.update(state["fakes"])
        self.calls.extend(state["calls"])

    def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.shutdown()
            self._tcp_server.server_close()
            self._tcp_server = None
        if self._registry is not None:
            self._registry_server.stop_event.set()
            self._registry_server.listener.close()  # also unlinks its socket
            self._registry = None
            shutil.rmtree(self._socket_dir, ignore_errors=True)


class UncopyableWorld(TypeError):
    """A fake that ``copy.deepcopy`` refuses: the world cannot be captured at a crash point."""


def _tcp_server(fakeredis: Any) -> Any:
    """A fakeredis server on a loopback port that answers without Nagle's delay.

    It writes each reply of a pipeline (or of MULTI/EXEC) as a small write of
    its own; with Nagle, every one after the first waits for the client's
    delayed ACK, 40 ms a round trip instead of a tenth of one.
    """

    class Server(fakeredis.TcpFakeServer):  # type: ignore[misc]
        def get_request(self) -> tuple[socket.socket, Any]:
            connection, address = super().get_request()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return connection, address

    return Server(("127.0.0.1", 0), server_type="redis")


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
        # JSON keys are text
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
