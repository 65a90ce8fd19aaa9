"""A second interpreter, started under another hash seed, that forks kill mode's lives on request.

A forked child keeps its parent's hash seed, fixed when the interpreter
started; a real restart gets a new one, and with it another iteration order
for every set of strings. So kill mode alternates: the lives that die are
forked from the test's process (where its monkeypatches and fixtures hold),
the lives that resume them from this *zygote*, an interpreter started under
a hash seed derived from the exploration's ``hash_seed``, and a second
resume from the test's process again.

The zygote never runs the user's workflow itself; it unpickles an
exploration (the workflow, its start event, ``respond``, the fakes and where
the shared world listens), warms up on a run of its own (``_warmup``) and
forks a child per life. Objects are pickled by reference where they can be
imported and by value otherwise (cloudpickle, when installed), so workflows
defined in a test function travel too. Two zygotes under two hash seeds
serve every exploration of the process, so their start is paid once.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from durableflow import Checkpointer, RedisCheckpointer, SQLiteCheckpointer

from ._wire import dumps, has_cloudpickle, receive, send

if TYPE_CHECKING:
    from ._exploration import Exploration

_PROBE = "durableflow hash probe"
"""Hashed by both interpreters: equal hashes would mean equal seeds."""

_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); from durableflow.testing._zygote import serve; serve()"
)


class ZygoteUnavailable(Exception):
    """The exploration cannot be handed to a second interpreter; the message says why."""


def store_address(store: Checkpointer) -> tuple[Any, ...] | None:
    """How another interpreter opens ``store``: SQLite by its file, Redis by its connection; ``None`` otherwise
    (a subclass too: reopened as its base, it would lose what the user's class overrides)."""
    if type(store) is SQLiteCheckpointer:  # every option it was made with: its record key too
        return ("sqlite", str(store.path), store.durability, store.lease_ttl, store.key, store.timeout)
    if type(store) is RedisCheckpointer:
        pool = store.client.connection_pool
        simple = (str, int, float, bool, type(None))
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if isinstance(v, simple)}
        return ("redis", pool.connection_class, kwargs, store.prefix, store.lease_ttl, store.key)
    return None


def open_store(address: tuple[Any, ...]) -> Checkpointer:
    if address[0] == "sqlite":
        _, path, durability, lease_ttl, key, timeout = address
        return SQLiteCheckpointer(path, durability, lease_ttl=lease_ttl, key=key, timeout=timeout)
    import redis

    _, connection_class, kwargs, prefix, lease_ttl, key = address
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))
    return RedisCheckpointer(client, prefix=prefix, lease_ttl=lease_ttl, key=key)


# -- the test's side -------------------------------------------------------------------------------


@final
class Zygote:
    """The handle on the zygote process: load an exploration, fork a life."""

    def __init__(self, seed: int) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONHASHSEED"] = str(seed)
        env["DURABLEFLOW_ZYGOTE_FD"] = str(theirs.fileno())
        path = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]
        import json

        try:
            # a process group of its own: a terminal's Ctrl-C is the test's process's to act on (it kills the
            # lives it follows), not this one's, which would die mid-import with a traceback of its own
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(path)], pass_fds=[theirs.fileno()], env=env,
                stdin=subprocess.DEVNULL, process_group=0,
            )  # fmt: skip
        finally:
            theirs.close()
        self.sock = ours
        self.loaded: set[int] = set()
        self._send(("hello",))  # answered when first asked for: zygotes started together boot together
        self._probe: int | None = None

    @property
    def probe(self) -> int:
        """``hash`` of a fixed text there: lives of two interpreters differ in hash order when their probes differ."""
        if self._probe is None:
            self._probe = int(self._receive()[1])
        return self._probe

    def alive(self) -> bool:
        return self.process.poll() is None

    def load(self, key: int, payload: bytes) -> None:
        self.probe  # noqa: B018 - the hello's answer comes first
        try:
            reply = self._ask(("load", key, payload))
        except (OSError, EOFError) as exc:
            raise ZygoteUnavailable(f"the second interpreter went away: {exc}") from None
        if reply[0] != "ok":
            raise ZygoteUnavailable(f"the second interpreter could not load the exploration: {reply[1]}")
        self.loaded.add(key)

    def forget(self, key: int) -> None:
        if key in self.loaded:
            self.loaded.discard(key)
            with contextlib.suppress(OSError, EOFError):
                self._send(("forget", key))

    def cpu_seconds(self) -> float:
        """CPU time the zygote and the lives it reaped have used so far, to the microsecond (``/proc`` counts
        in ticks of 10 ms: a quarter of a depth-1 exploration's share there)."""
        self.probe  # noqa: B018 - the hello's answer comes first
        return float(self._ask(("usage",))[1])

    def fork(self, key: int, store: tuple[Any, ...], first: bool, capture: set[str] | None, **life: Any) -> None:
        """Have the zygote fork a life of exploration ``key``; ``life`` holds its clock and its two pipe ends.

        One way: the child says its pid on its report pipe, and the zygote reaps it by itself as it exits,
        so a life costs the test's process no round trip to the zygote.
        """
        fds = [life.pop("reports"), life.pop("go")]
        send(self.sock, ("fork", key, store, first, capture, life), fds)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _send(self, message: tuple[Any, ...]) -> None:
        send(self.sock, message, [])

    def _receive(self) -> tuple[Any, ...]:
        message, _ = receive(self.sock)
        if message is None:
            raise ZygoteUnavailable(f"the second interpreter exited ({self.process.poll()})")
        return message

    def _ask(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        self._send(message)
        return self._receive()


_zygotes: dict[int, Zygote] = {}
_refused: str | None = None


def zygote(seed: int) -> Zygote:
    """This process's zygote with hash seed ``seed``, started on first use and kept for every later exploration."""
    global _refused
    if _refused is not None:
        raise ZygoteUnavailable(_refused)
    handle = _zygotes.get(seed)
    if handle is None or not handle.alive():
        try:
            handle = _zygotes[seed] = Zygote(seed)
        except (OSError, ZygoteUnavailable) as exc:
            _refused = str(exc)
            raise ZygoteUnavailable(_refused) from None
        atexit.register(handle.close)
    return handle


def hash_seeds_for(seed: int) -> tuple[int, int]:
    """The two zygotes' hash seeds for an exploration's ``hash_seed`` (0 would turn hash randomization off)."""
    return seed % 4294967295 + 1, (seed + 1) % 4294967295 + 1


def for_life(exploration: Exploration, store: Checkpointer, nth: int) -> Zygote | None:
    """Who forks life ``nth`` of a run: ``None`` for the test's process (the run's first life: the test's
    monkeypatches and fixtures reach it), a zygote for the lives that resume it, the two in turn. ``None``
    with a note when the exploration cannot go to the zygotes: every life is then forked from the test's."""
    if not nth or exploration.zygotes is False:
        return None
    try:
        if exploration.zygotes is None:
            if store_address(store) is None:
                why = "its store is not one another interpreter can open (SQLite or Redis, not a subclass)"
                raise ZygoteUnavailable(why)
            exploration.zygotes = hand_over(exploration, hash_seeds_for(exploration.settings.hash_seed))
            probes = [hash(_PROBE), *(zygote.probe for zygote in exploration.zygotes)]
            if len(set(probes)) < len(probes):
                raise ZygoteUnavailable("its hash seeds hash alike")
        chosen = exploration.zygotes[(nth - 1) % len(exploration.zygotes)]
        # loaded for its first life: at depth 1 every resume is a first resume, and the second zygote idles
        if exploration.zygote_key not in chosen.loaded:
            chosen.load(exploration.zygote_key, payload_of(exploration))
    except ZygoteUnavailable as exc:
        forget(exploration)
        exploration.zygotes = False
        exploration.notes.append(f"every life ran under this process's hash seed, not a restart's new one: {exc}")
        return None
    return chosen


def hand_over(exploration: Exploration, seeds: tuple[int, ...]) -> list[Zygote]:
    """The zygotes of ``seeds``, started, to load ``exploration`` each on its first life of it; or
    ``ZygoteUnavailable`` saying why it cannot go to them."""
    payload_of(exploration)  # one that cannot be pickled is told before any zygote starts
    return [zygote(seed) for seed in seeds]  # all started before any is waited for


def payload_of(exploration: Exploration) -> bytes:
    """What a zygote loads: the exploration pickled (once), or ``ZygoteUnavailable`` saying why it cannot be."""
    if exploration.zygote_payload is not None:
        return exploration.zygote_payload
    try:
        exploration.zygote_payload = dumps(
            (
                exploration.make, exploration.start, exploration.run_id, exploration.settings.respond,
                exploration.settings.hang_after, exploration.world.address(), exploration.clock is not None,
                exploration.settings.compact, exploration.cls, exploration.cls.__qualname__,
            )
        )  # fmt: skip
    except Exception as exc:
        hint = "" if has_cloudpickle() else " (pip install cloudpickle to send objects defined in a test by value)"
        raise ZygoteUnavailable(f"the exploration cannot be pickled: {type(exc).__name__}: {exc}{hint}") from None
    return exploration.zygote_payload


def forget(exploration: Exploration) -> None:
    """The zygotes that loaded ``exploration`` drop it."""
    for handle in exploration.zygotes or ():
        handle.forget(exploration.zygote_key)


# -- the zygote's side -----------------------------------------------------------------------------


@dataclass
class Loaded:
    """An exploration as the zygote holds it: what ``_kill._child`` reads of an ``Exploration``."""

    make: Any
    start: Any
    run_id: str
    settings: Any
    world: Any
    clock: Any
    lives: Any = None


def serve() -> None:  # pragma: no cover - runs in the zygote, measured through the tests' explorations
    """The zygote's loop: answer the test's process until it goes away, and reap each life as it exits.

    Reaping as soon as a life exits (woken by SIGCHLD) lets the test's process see it gone without
    asking, and counts its CPU time in the zygote's, as a benchmark measuring every process expects.
    """
    from . import _kill  # noqa: F401 - imported once here, not in every forked life

    sock = socket.socket(fileno=int(os.environ["DURABLEFLOW_ZYGOTE_FD"]))
    # Ctrl-C is the test's process's to act on (this one ends when its socket closes; the test's kills the
    # lives it follows): ignored here and in every life forked from here, as in those forked from the test's
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _serve(sock)
    except ConnectionError:  # the test's process went away mid-word (Ctrl-C as this one started): nothing to tell
        os._exit(0)


def _serve(sock: socket.socket) -> None:  # pragma: no cover - runs in the zygote
    import gc
    import resource
    import select

    exited, wake = os.pipe()
    os.set_blocking(exited, False)
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to write to the wake-up pipe
    loaded: dict[int, Loaded] = {}
    reporting: dict[int, int] = {}  # each life's report pipe, open until it is reaped: read to its end, it is gone
    freezer: Any = None
    while True:
        ready, _, _ = select.select([sock.fileno(), exited], [], [])
        if exited in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(exited, 4096)
            _reap(reporting)
        if sock.fileno() not in ready:
            continue
        message, fds = receive(sock)
        if message is None:
            os._exit(0)
        kind = message[0]
        if kind == "hello":
            send(sock, ("hello", hash(_PROBE)), [])
        elif kind == "load":
            try:
                loaded[message[1]], freezer = _load(message[2], freezer)
                send(sock, ("ok",), [])
            except BaseException as exc:
                send(sock, ("error", f"{type(exc).__name__}: {exc}"), [])
        elif kind == "usage":
            used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            send(sock, ("usage", sum(usage.ru_utime + usage.ru_stime for usage in used)), [])
        elif kind == "forget":
            loaded.pop(message[1], None)
            gc.collect()  # its cycles, now: only what came after the freeze is looked through
        elif kind == "fork":
            _, key, store, first, capture, life = message
            opened = _prepare(loaded[key], store, life, fds[0])
            pid = -1
            if opened is not None:
                try:
                    pid = os.fork()
                except OSError as exc:
                    os.write(fds[0], f"E error the second interpreter could not fork a life: {exc}\n".encode())
            if pid == 0:
                sock.close()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(exited)
                os.close(wake)
                try:
                    assert opened is not None
                    _live(loaded[key], opened, first, capture, life, fds)
                finally:
                    os._exit(0)
            if pid > 0:
                reporting[pid] = fds.pop(0)
            for fd in fds:
                os.close(fd)


def _reap(reporting: dict[int, int]) -> None:  # pragma: no cover - runs in the zygote
    """Reap every life that has exited, and close its report pipe."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        if pid in reporting:
            os.close(reporting.pop(pid))


_kept: list[Any] = []


def _load(payload: bytes, freezer: Any) -> tuple[Loaded, Any]:  # pragma: no cover - runs in the zygote
    from durableflow import plugin_manager, use_clock

    from ._clock import FrozenClock
    from ._lives import Lives
    from ._settings import Settings
    from ._world import FakeWorld

    make, start, run_id, respond, hang_after, world, frozen, compact, cls, qualname = pickle.loads(payload)
    # A class sent by value comes back named by its bare name, and runs are bound to the name; a factory's
    # class came in the same payload, so it is the very class the factory returns instances of.
    cls.__qualname__ = qualname
    clock = None
    if frozen:
        if freezer is None:
            import freezegun

            freezer = freezegun.freeze_time("2030-01-01", real_asyncio=True).start()
            _kept.append(use_clock(FrozenClock(freezer)))  # for the zygote's whole life: never exited
            _kept[-1].__enter__()
        from durableflow import get_clock

        clock = get_clock()
    plugin_manager.load_entry_points()  # once here, not in every forked life
    settings = Settings(respond=respond, hang_after=hang_after, compact=compact)
    exploration = Loaded(make, start, run_id, settings, None, clock)
    exploration.world = FakeWorld.reached(world)
    exploration.world.overrides()
    exploration.lives = Lives(exploration)  # type: ignore[arg-type]
    _warm(exploration.world, cls)
    return exploration, freezer


_warmed: list[bool] = []


def _warm(world: Any, cls: type) -> None:  # pragma: no cover - runs in the zygote
    """Build, here and once, what every forked life would otherwise build for itself."""
    import gc

    from ._heap import hold_free_chunks
    from ._warmup import warm_up

    with contextlib.suppress(Exception):  # warming is only an optimisation: a life forked cold is still right
        warm_up(cls, run=not _warmed)
    _warmed.append(True)
    if world.redis_address is not None:
        with contextlib.suppress(Exception):
            world.learn_redis_options(cls)
        world.warm_redis()
        for override in world.overrides().values():  # the clients the lives will use, built but not connected
            for options in getattr(override, "learnt", {}).values():
                world.redis_client(options)
        world.ready_redis_connections()
    if len(_warmed) == 1:
        # What the first load built (the engine, warmed) stays out of the collector's sight here and in every
        # life forked from here. Not what later loads build: frozen, an exploration could never be collected
        # once forgotten (it and its lives point at each other), some 30 KB an exploration for good.
        gc.freeze()
    with contextlib.suppress(Exception):
        hold_free_chunks()


def _prepare(  # pragma: no cover - runs in the zygote
    exploration: Loaded, store: tuple[Any, ...], life: Any, reports: int
) -> Checkpointer | None:
    """Set the clock and make the store's checkpointer for a life, here, before forking it: what the zygote
    writes again for every life costs it little, while a child pays a copied page for each page it writes.
    The store is not opened (no connection crosses the fork); ``None`` after saying why on ``reports``."""
    try:
        if exploration.clock is not None and life.get("clock") is not None:
            exploration.clock.restart_at(life["clock"])
        return open_store(store)
    except BaseException as exc:
        os.write(reports, f"E error the resumed life could not start: {type(exc).__name__}: {exc}\n".encode())
        return None


def _live(  # pragma: no cover - runs in a child of the zygote
    exploration: Loaded, store: Checkpointer, first: bool, capture: set[str] | None, life: Any, fds: list[int]
) -> None:
    import asyncio
    import gc

    from ._kill import _child

    gc.disable()
    reports, go = fds
    os.write(reports, f"I {os.getpid()}\n".encode())  # who to kill should it overstay, and to see gone
    exploration.world.adopt_redis_clients()
    if exploration.settings.compact:  # this child's alone: the zygote serves other explorations too
        from ._lives import compacting

        compacting(True).__enter__()
    loop = asyncio.new_event_loop()
    _child(exploration, store, first, capture, reports, go, loop, life.get("errands"))  # type: ignore[arg-type]
