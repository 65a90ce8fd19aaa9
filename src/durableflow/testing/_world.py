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
import os
import re
import secrets
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.managers import BaseManager
from typing import Any, final

from durableflow import override_resources
from durableflow._errors import install_hint

from ._gates import Gate, Gated, gated_client
from ._redisserver import socket_directory
from ._redisworld import (
    FakeRedisFor,
    LikeFake,
    RedisContents,
    client_options,
    endpoint,
    quiet_connect,
    redis_fakes,
    served,
)
from ._remotefake import RemoteFake, serving, stopped_serving

GRACE = 1.0
"""Seconds a life's other threads get to come out of the world before a copy, or after the life ends."""

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


@final
class _Current:
    """What runs are served for a fake: whichever object the world holds for it at each use.

    A life keeps what it was served (in kill mode, a proxy to this object in the parent) while the
    world may be put back under it: the reference life goes on after a twin of it lived a scenario.
    Its calls must reach the fake as restored, not the object the twin changed.
    """

    def __init__(self, world: FakeWorld, key: object, journal: Callable[[str], None] | None) -> None:
        object.__setattr__(self, "_world", world)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_journal", journal)

    @property
    def _target(self) -> Any:
        return self._world._current(self._key)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # passes isinstance checks as the fake would
        return type(self._target)

    def __getattr__(self, attribute: str) -> Any:
        target = self._target
        if self._journal is not None:
            return getattr(Recorder(target, _name_of(self._key), self._journal), attribute)
        return getattr(target, attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        setattr(self._target, attribute, value)

    def __dir__(self) -> list[str]:  # a manager's proxy exposes the methods dir() lists
        return dir(self._target)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Current:
        """A fake that keeps another served fake keeps it in a copy of the world too: still this name for
        whichever object the world holds, so that restored it reaches the other fake as restored."""
        return self


_KEYED = re.compile(r"[(, ]idempotency_key=(?!None[,)])")
"""A call text that passes an idempotency key (``None`` is none)."""


def _call_text(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in sorted(kwargs.items())]
    return f"{name}({', '.join(parts)})"


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
        self.redis_fakes = redis_fakes(self.fakes)
        self.record_keys = record
        self.calls: list[str] = []
        self._keys = list(self.fakes)
        self._built: dict[object, Any] = {}  # the fakes themselves
        self._served: dict[object, Any] = {}  # what runs get: a _Current for each fake
        self._lock = threading.Lock()
        self._shared = shared
        self._home = os.getpid()
        self._tcp_server: Any = None
        self._tcp_address: str | tuple[str, int] | None = None
        self.served_redis_options: dict[str, Any] | None = None
        """How the Redis client last served in place of a real one decodes (``fake_redis`` follows it)."""
        self._server: Any = None
        self._contents: RedisContents | None = None
        self._served_clients: dict[tuple[bool, int], Any] = {}
        """Synchronous clients of the in-process server, by (decode_responses, db): each life gets a gated copy."""
        self.gate: Gate | None = None
        """In-process, the gate of the life being lived: what it is served passes it (see ``_gates``)."""
        self.shut_gates: list[Gate] = []
        """Gates of ended lives that a thread was still inside when they shut."""
        self.torn = 0
        """How often a thread of a life stayed inside the world while the life was meant to stand still."""
        self._registry: Any = None
        self._registry_client: Any = None
        self._overrides: dict[object, Any] | None = None
        if shared:  # start serving now: forked lives must find the world in the parent
            try:
                self.overrides()
                if redis or self.redis_fakes:
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
                raise ImportError(f"the fake world needs fakeredis, in {install_hint('pytest')}") from None
            if self._shared:
                self._tcp_server = served(fakeredis)
                self._tcp_address = getattr(self._tcp_server, "path", None) or self._tcp_server.server_address[:2]
                self._server = self._tcp_server.fake_server
            else:
                self._server = fakeredis.FakeServer()
            self._contents = RedisContents(self._server)
        return self._server

    def redis_client(self, options: Mapping[str, Any] | None = None, asyncio: bool = False, fresh: bool = False) -> Any:
        """A client of this world's server with ``options`` (``decode_responses``, ``db``) of the real client.

        A synchronous client is built once per set of options (unless ``fresh``). In-process each life gets
        a copy that passes its gate; in kill mode one built before a fork serves the lives forked after it,
        each connecting on its own (redis-py drops a pool's connections in a process that did not make
        them): a forked life that builds a redis-py client pays for it in copied pages, one built here
        costs it nothing. Asynchronous clients belong to the loop of the life that uses them.
        """
        options = client_options(options)
        if self._tcp_address is None:
            self.redis_server  # noqa: B018 - without fakeredis, it raises naming the extra to install
        if self._tcp_address is not None:  # a real client on the shared socket, as the other processes use
            import redis
            import redis.asyncio

            where = endpoint(self._tcp_address)
            client_cls: Any = redis.asyncio.Redis if asyncio else redis.Redis
            if asyncio or fresh:
                return client_cls(**where, **options, **quiet_connect(client_cls))
            key = (bool(options["decode_responses"]), int(options["db"]))
            client = self._served_clients.get(key)
            if client is None:
                client = self._served_clients[key] = client_cls(**where, **options, **quiet_connect(client_cls))
            return client
        import fakeredis

        if asyncio:
            return fakeredis.FakeAsyncRedis(server=self.redis_server, **options)
        key = (bool(options["decode_responses"]), int(options["db"]))
        client = self._served_clients.get(key)
        if client is None:
            client = self._served_clients[key] = fakeredis.FakeRedis(server=self.redis_server, **options)
        return client if self.gate is None else gated_client(client, self.gate)

    def redis_snapshot(self) -> dict[str, Any]:
        """Every key of every database, as JSON-comparable data (shared between calls: read it only)."""
        return {} if self._contents is None else self._contents.readable()

    # -- the user's fakes ------------------------------------------------------------------

    def _fake(self, key: object) -> Any:
        if self._registry is not None and os.getpid() != self._home:  # a forked life: the fake lives in the parent
            if self._registry_client is None:
                registry, address, authkey = self._registry
                self._registry_client = registry(address=address, authkey=authkey)
                self._registry_client.connect()
            index = self._keys.index(key)
            return RemoteFake(self._registry_client.fake(index), self._built[key], self._registry[1], index)
        return self._fake_here(key)

    def _current(self, key: object) -> Any:
        with self._lock:
            if key not in self._built:
                self._built[key] = self.fakes[key]()
            return self._built[key]

    def _fake_here(self, key: object) -> Any:
        with self._lock:
            if key not in self._served:
                journal = self.calls.append if key in self.record_keys else None
                self._served[key] = _Current(self, key, journal)
            served = self._served[key]
        gate = self.gate
        return served if gate is None or self._registry is not None else Gated(served, gate)

    @property
    def redis_address(self) -> str | tuple[str, int] | None:
        """Where the shared world's fakeredis listens (kill mode), if it does: a Unix socket's path, or TCP."""
        return self._tcp_address

    def address(self) -> dict[str, Any]:
        """Where another process finds this shared world: what ``FakeWorld.reached`` takes."""
        registry = None if self._registry is None else self._registry[1:]
        fakes = dict(self.fakes)
        for key, (factory, is_async) in self.redis_fakes.items():  # as they decode, not as they are made
            fakes[key] = LikeFake(tuple(FakeRedisFor(self, is_async).options(factory).items()), is_async)
        return {"fakes": fakes, "record": self.record_keys, "redis": self._tcp_address, "registry": registry}

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
        # TCP only where no directory has a path short enough for a socket's.
        self._socket_dir = socket_directory("durableflow-fakes-", "fakes.sock")
        address: Any = ("127.0.0.1", 0)
        if self._socket_dir is not None:
            address = os.path.join(self._socket_dir, "fakes.sock")
        server = registry(address=address, authkey=authkey).get_server()

        def serve() -> None:
            with contextlib.suppress(SystemExit):  # how a manager's server says it stopped
                server.serve_forever()

        threading.Thread(target=serve, daemon=True, name="durableflow-fakes").start()
        self._registry = (registry, server.address, authkey)
        self._registry_server = server
        serving(server.address, lambda index: self._fake_here(self._keys[index]))

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
        for key, (factory, is_async) in self.redis_fakes.items():
            overrides[key] = FakeRedisFor(self, asyncio=is_async).for_resource(factory)
        self._overrides = overrides
        return overrides

    def learn_redis_options(self, workflow: type) -> None:
        """Learn now how each Redis-typed resource of ``workflow`` decodes (see ``FakeRedisFor.options``),
        so that lives forked from this process inherit it: learning builds a client of the factory's,
        which costs a short life several times over (redis-py reads its own package metadata)."""
        from durableflow._graph import graph_of

        overrides = self.overrides()
        for spec in graph_of(workflow).steps.values():
            for source in spec.plan:
                if not isinstance(source, tuple):
                    continue
                resource, annotation = source
                if not isinstance(annotation, type) or resource.factory in self.fakes:
                    continue  # a fake of the user's by factory: its runs never ask the Redis override
                for key, override in overrides.items():
                    if isinstance(override, FakeRedisFor) and isinstance(key, type) and issubclass(annotation, key):
                        override.options(resource.factory)
                        break

    def warm_redis(self) -> None:
        """Connect to this world's Redis and ping it, once a process: what redis-py builds for its first command
        then serves every life forked from here, instead of costing each a copied page a page (some 500 a life)."""
        if self._tcp_address is None or _redis_warmed:
            return
        _redis_warmed.append(True)
        client = self.redis_client(fresh=True)
        with contextlib.suppress(Exception):  # warming is only an optimisation
            client.ping()
        client.close()
        client.connection_pool.disconnect()  # no connection of this process's may reach a forked life

    def ready_redis_connections(self) -> None:
        """Give each client built here for the lives one connection object, made but never connected: each life
        forked from here inherits it instead of making its own, copying the pages it writes (adopt_redis_clients)."""
        for client in self._served_clients.values():
            pool = client.connection_pool
            with contextlib.suppress(Exception):  # only an optimisation: a pool redis-py left as it was still works
                if not pool._available_connections and not pool._in_use_connections:
                    pool._available_connections.append(pool.make_connection())

    def adopt_redis_clients(self) -> None:
        """In a life just forked from the process that built its clients: their pools and unconnected connection
        objects are this process's now (redis-py would take them for another process's and make them again)."""
        pid = os.getpid()
        for client in self._served_clients.values():
            pool = client.connection_pool
            if isinstance(getattr(pool, "pid", None), int):
                for connection in getattr(pool, "_available_connections", ()):
                    if getattr(connection, "_sock", True) is None:  # never connected: no socket to share
                        connection.pid = pid
                pool.pid = pid

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
        if self._contents is not None:
            self._contents.clear()
        self.calls.clear()
        with self._lock:
            self._built.clear()
            self._served.clear()
            if self._registry is not None:  # built now, so that every forked life holds a copy to read signatures from
                self._built.update((key, factory()) for key, factory in self.fakes.items())

    def capture(self) -> dict[str, Any]:
        """The world as it stands: every Redis key dumped byte for byte, a copy of each fake, the calls so far.

        In-process, the life's other threads are held out meanwhile, so the copy is one instant of the world.
        """
        gate = self.gate
        whole = gate is None or gate.pause(GRACE)
        if not whole:
            self.torn += 1
        try:
            redis = {} if self._contents is None else self._contents.dump()
            memo: dict[int, Any] = {}  # one memo for all: fakes that share an object still share its copy
            fakes = {}
            with self._lock:  # copied outside it: a fake that keeps another served fake looks it up
                built = list(self._built.items())
            for key, fake in built:
                try:
                    fakes[key] = copy.deepcopy(fake, memo)
                except Exception as exc:
                    raise UncopyableWorld(
                        f"the harness copies your fakes at every crash point, so they must be deep-copyable: "
                        f"copying the fake for {_name_of(key)} (a {type(fake).__name__}) raised "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            calls = list(self.calls)
        finally:
            if gate is not None:
                gate.resume()
        return {"redis": redis, "fakes": fakes, "calls": calls, "whole": whole}

    def restore(self, state: dict[str, Any]) -> None:
        """Make the world what ``capture`` saw (each capture is restored once, so it is used as is)."""
        self.reset()
        if self._contents is not None:
            self._contents.restore(state["redis"])
        with self._lock:
            self._built.update(state["fakes"])
        self.calls.extend(state["calls"])

    # -- lives, in-process -------------------------------------------------------------

    def open_gate(self) -> Gate:
        """A new life begins: what it is served from now on passes its own gate."""
        self.gate = Gate()
        return self.gate

    def shut_gate(self, gate: Gate) -> None:
        """The life is over: its threads are refused the world; one still inside is remembered."""
        if self.gate is gate:
            self.gate = None
        if not gate.shut(GRACE):
            self.shut_gates.append(gate)

    def disturbance(self) -> tuple[int, int, int]:
        """Calls of ended lives inside the world now, those that came out of it after their life ended, and
        pauses a thread did not stand still for. A scenario that begins with the first above zero, or sees
        the others grow, ran in a world that was not its own alone."""
        gates = self.shut_gates
        return sum(gate.inside for gate in gates), sum(gate.late for gate in gates), self.torn

    def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.stop()
            self._tcp_server = None
        if self._registry is not None:
            stopped_serving(self._registry[1])
            self._registry_server.stop_event.set()
            self._registry_server.listener.close()  # also unlinks its socket
            self._registry = None
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)


_redis_warmed: list[bool] = []


class UncopyableWorld(TypeError):
    """A fake that ``copy.deepcopy`` refuses: the world cannot be captured at a crash point."""


def _name_of(key: object) -> str:
    return str(getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or key)
