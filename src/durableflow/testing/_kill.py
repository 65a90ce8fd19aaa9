"""Kill mode: every life of a run is a forked child, and every resume a fresh fork of a process that never ran it.

A SIGKILL leaves behind only what the process had already handed to the
kernel and to other systems: its store's records and the world it talked
to. So instead of running a run to each crash point and killing it there —
a fork and a full life per crash point — the child waits at each point while
the parent captures exactly that (``Exploration.capture``), then goes on.
Each scenario is then one fresh fork resuming from a capture. The child
reports as it goes over a pipe: each crash point, the frozen time, and at
its end how the run stands in its store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import math
import os
import pickle
import select
import signal
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from durableflow import Record, RunNotFoundError, SQLiteCheckpointer, _crashpoints, get_clock
from durableflow._framing import record_key

from ._clock import FrozenClock, real_monotonic
from ._heap import hold_free_chunks
from ._lives import Errands, Hits, Life, NeedsInput, ResumeFailed, _at, overstayed, probe_second_worker, read_back
from ._stores import read_records
from ._stuck import Stuck
from ._zygote import store_address

if TYPE_CHECKING:
    from durableflow import Checkpointer

    from ._exploration import Exploration
    from ._zygote import Zygote


def live_in_child(
    exploration: Exploration,
    store: Checkpointer,
    first: bool,
    capture: set[str] | None,
    zygote: Zygote | None = None,
    errands: Errands | None = None,
) -> Life:
    """Live one life in a forked child, capturing at the points in ``capture`` (``None``: every point).

    With ``zygote``, the child is forked from that second interpreter (another hash seed), not from here.
    """
    report_read, report_write = os.pipe()
    go_read, go_write = os.pipe()
    pid: int | None = None
    try:
        try:
            wanted: dict[str, Any] = {}
            if errands is not None:
                wanted = {
                    "pause_at": errands.pause_at, "pause_position": errands.pause_position,
                    "probe_at": errands.probe_at, "read_back": errands.read_back,
                }  # fmt: skip
            if zygote is None:
                pid = _fork(
                    exploration, store, first, capture, (report_read, report_write), (go_read, go_write), wanted
                )
            else:
                address = store_address(store)
                assert address is not None  # the exploration checked before choosing the zygote
                now = exploration.clock.now() if exploration.clock is not None else None
                zygote.fork(
                    exploration.zygote_key, address, first, capture, clock=now, reports=report_write, go=go_read,
                    errands=wanted,
                )  # fmt: skip
        finally:
            os.close(report_write)  # the child's ends: it keeps its own copies
            os.close(go_read)
        life = _follow(exploration, store, pid, report_read, go_write, errands)
    finally:
        os.close(report_read)
        os.close(go_write)
    clock = get_clock()
    if life.clock is not None and isinstance(clock, FrozenClock):
        clock.move_to(life.clock)  # the time the child saw pass has passed here too
    return life


def _gone(pid: int | None, ours: bool) -> None:
    """Wait until the life ``pid`` is gone for good, so that its lease counts as held by a dead process:
    reaped here if it is this process's child, else by the zygote as it exits (which closes the life's report
    pipe only then: once that pipe was read to its end, the first look finds the life gone)."""
    if pid is None:
        return
    if ours:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return
    give_up = real_monotonic() + 5.0
    while real_monotonic() < give_up:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:  # the pid went to another user's process: ours is gone
            return
        time.sleep(0.0002)


def _fork(
    exploration: Exploration,
    store: Checkpointer,
    first: bool,
    capture: set[str] | None,
    reports: tuple[int, int],
    go: tuple[int, int],
    errands: dict[str, Any],
) -> int:
    """Fork the child that lives the life, reporting on ``reports`` and waiting on ``go``; return its pid."""
    # A child that collects garbage touches every inherited object and copies its page: keep the
    # parent's objects out of the collector's sight, and let the short-lived child never collect. Where the
    # test froze objects itself, unfreezing would thaw those too: its frozen ones are then left as they are.
    ours = gc.get_freeze_count() == 0
    if ours:
        gc.freeze()
    with contextlib.suppress(Exception):  # only an optimisation
        hold_free_chunks()
    # Ctrl-C is the exploration's to act on (it kills the life it follows): a life that took it too would
    # end as an error, perhaps told before the exploration sees its own. Blocked across the fork, so that
    # none reaches the child before it ignores them; one meanwhile reaches this process once unblocked.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - measured through the parent's report
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            gc.disable()
            os.close(reports[0])
            os.close(go[1])
            try:
                # The child's own loop: one built before the fork would share its epoll instance with the
                # parent, whose closing it would unregister the loop's wake-up pipe there too, and the child
                # would never wake for a thread's result (call_soon_threadsafe, asyncio.to_thread).
                loop = asyncio.new_event_loop()
                _child(exploration, store, first, capture, reports[1], go[0], loop, errands)
            finally:
                os._exit(0)  # no atexit, no pytest teardown: the child only ever lives this one life
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if ours:
            gc.unfreeze()
    return pid


def _follow(
    exploration: Exploration,
    store: Checkpointer,
    pid: int | None,
    reports: int,
    go: int,
    errands: Errands | None,
) -> Life:
    """Read the child's reports as they come, capturing where it waits, until it exits or overstays.

    ``pid`` is ``None`` for a child of the zygote: it says its pid first. Whatever goes wrong here (a
    fake that cannot be copied, Ctrl-C) kills the child first: it must not go on unsupervised.
    """
    life = Life(ending="error", error="the process died before it finished (os._exit or a signal in the workflow?)")
    child = _Child(pid)
    try:
        _supervise(life, exploration, store, child, reports, go, errands)
    except BaseException:
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError, OSError):
                os.kill(child.pid, signal.SIGKILL)
            _gone(child.pid, ours=pid is not None)
        for capture in life.captures.values():  # nobody will resume from them
            exploration.stores.discard(capture.store, exploration.run_id)
        raise
    return life


class _Child:
    """The pid of the life being followed, once known."""

    __slots__ = ("pid",)

    def __init__(self, pid: int | None) -> None:
        self.pid = pid


def _supervise(
    life: Life,
    exploration: Exploration,
    store: Checkpointer,
    child: _Child,
    reports: int,
    go: int,
    errands: Errands | None = None,
    twin: bool = False,
) -> None:
    """Fill in ``life`` from the child's reports; only the child's own time counts against the hang bound.

    A ``twin`` (see ``_fork_twin``) shares its pipes with the life it was forked from: followed until that
    life says the twin is gone (``X``; or that none could be forked: ending ``refused``), not until they
    close. A twin gone without saying how it ended was killed where it stood: it crashed."""
    bound = exploration.settings.hang_after
    ours = child.pid is not None
    give_up = real_monotonic() + bound
    pending = b""
    unreadable: str | None = None
    ended = False
    while True:
        ready, _, _ = select.select([reports], [], [], max(0.0, give_up - real_monotonic()))
        chunk = os.read(reports, 65536) if ready else None
        if not chunk:
            if chunk is None and not (twin and life.ending == "hang"):  # overstayed its bound
                if child.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                life.ending, life.error, ended = "hang", overstayed(bound), True
                if twin:  # the life it came from reaps it, and says so
                    give_up = real_monotonic() + bound
                    continue
            _gone(child.pid, ours)
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            tag, _, rest = line.decode(errors="replace").partition(" ")
            if tag == "H":
                life.hits.append(rest)
            elif tag == "T":
                life.clock = float(rest)
            elif tag == "I":
                child.pid = int(rest)
            elif tag == "P":  # the child waits at this point until it is captured
                began = real_monotonic()
                if (
                    errands is not None
                    and errands.interlude is not None
                    and _at(life.hits[-1], len(life.hits) - 1, errands.pause_at, errands.pause_position)
                ):
                    wake = errands.interlude(life.clock)  # another worker takes the run over meanwhile
                    os.write(go, b"z" + struct.pack("!d", wake if wake is not None else math.nan))
                else:
                    life.captures[life.hits[-1]] = exploration.capture(store, life.hits, life.clock)
                    if errands is not None and errands.twins is not None:
                        errands.twins(life, store, reports, go)  # scenarios lived by twins forked here
                    os.write(go, b"g")
                give_up += real_monotonic() - began  # the child stood still meanwhile: not its time
            elif tag == "L":
                life.probe = rest.replace("\\n", "\n")
            elif tag == "R":
                life.round_trip = rest.replace("\\n", "\n")
            elif tag == "S":
                try:
                    life.stored = _read_stored(rest, exploration.run_id, store)
                except Exception as exc:  # what the life would have raised reading it: its ending
                    unreadable = f"the life raised {type(exc).__name__}: {exc}".replace("\n", " ")
            elif tag == "E":
                ending, _, error = rest.partition(" ")
                life.ending, life.error = ending, error or None
                if unreadable is not None and ending == "finished":
                    life.ending, life.error = "error", unreadable
                ended = True
            elif tag == "X" and twin:  # reaped by the life it was forked from
                if not ended:  # killed where it stood (the OOM killer, a segfault): as a crash would
                    life.ending, life.error = "crashed", None
                os.write(go, b"x")  # what was sent it meanwhile was not for the life that reads on
                return
            elif tag == "N" and twin:
                life.ending, life.error = "refused", None
                return


def _child(
    exploration: Exploration,
    store: Checkpointer,
    first: bool,
    capture: set[str] | None,
    fd: int,
    go: int,
    loop: asyncio.AbstractEventLoop,
    errands: dict[str, Any] | None = None,
) -> None:
    clock = get_clock()
    pause_at, probe_at = (errands or {}).get("pause_at"), (errands or {}).get("probe_at")
    pause_position = (errands or {}).get("pause_position")
    reading_back, read_failed = bool((errands or {}).get("read_back")), list[str]()
    frozen = isinstance(clock, FrozenClock)
    hits = Hits()
    pending: list[str] = []
    """Lines not yet sent: a life's reports go out in as few writes as its pauses allow."""

    def write(line: str, now: bool = False) -> None:
        if now and frozen:  # the time first: what the line makes the parent do (a capture) reads it
            pending.append(f"T {clock.now()!r}")
        pending.append(line)
        if now:
            os.write(fd, ("\n".join(pending) + "\n").encode())
            pending.clear()

    def probe_and_end() -> None:
        frozen = clock if isinstance(clock, FrozenClock) else None
        found = probe_second_worker(store, exploration.run_id, frozen, exploration.lives.handler) or ""
        pending.append("L " + found.replace("\n", "\\n"))  # always: a life that says nothing never probed
        # the probe's verdict is all this life is for: it stops here, as a crash would, not at the run's end
        write("E crashed", now=True)
        os._exit(0)

    def listener(point: str) -> None:
        nonlocal capture, reading_back, pause_at
        hit = hits.hit(point)
        pending.append(f"H {hit}")
        if reading_back and point == "checkpoint.write.after" and not read_failed:
            differs = read_back(store, exploration.run_id, exploration.lives.handler, hit)
            if differs is not None:
                read_failed.append(differs)
                write("R " + differs.replace("\n", "\\n"), now=True)
        if hit == probe_at:
            probe_and_end()
        if capture is None or hit in capture or _at(hit, len(hits.list) - 1, pause_at, pause_position):
            write("P", now=True)
            while True:
                tag = os.read(go, 1)
                if not tag:  # the parent is gone: nobody would ever read or reap this life
                    os._exit(1)
                if tag in (b"t", b"p"):  # a twin of this life, standing here, on a copy of its store
                    (size,) = struct.unpack("!H", os.read(go, 2))
                    if not _fork_twin(store, os.read(go, size).decode(), loop, fd, go):
                        continue  # this life, its twin gone: the parent's next word follows
                    if tag == b"p":  # the second-worker probe, and nothing more
                        probe_and_end()
                    capture, reading_back, pause_at = set(), False, None  # a paused worker, here only
                    write("P", now=True)
                    continue
                if tag == b"z":  # woken after a pause: the time the world moved on to meanwhile
                    (wake,) = struct.unpack("!d", os.read(go, 8))
                    if isinstance(clock, FrozenClock) and not math.isnan(wake):
                        clock.move_to(wake)
                break

    asyncio.events._set_running_loop(None)  # forked from inside a running loop, perhaps
    ending = "E finished"
    try:
        with _crashpoints.armed(listener), exploration.world.serving():
            loop.run_until_complete(exploration.lives.drive(store, first))
        # read here, where its connection is open (the parent would open one more); decoded there, where
        # most scenarios' records were decoded before (``read_records``)
        try:
            records: list[Any] | None = [(r.seq, r.full, bytes(r.data)) for r in store.load(exploration.run_id)]
        except RunNotFoundError:
            records = None
        pending.append(f"S {base64.b64encode(pickle.dumps(records)).decode()}")
    except NeedsInput as exc:
        ending = f"E input {exc}"
    except Stuck as exc:
        ending = f"E hang {exc}"
    except ResumeFailed as exc:
        ending = f"E error {exc}"
    except BaseException as exc:
        ending = f"E error the life raised {type(exc).__name__}: {exc}"
    write(ending.replace("\n", " "), now=True)


_inherited: list[Any] = []
"""A twin's inherited store connections: never closed there, their files are the other life's."""


def _fork_twin(store: Checkpointer, path: str, loop: asyncio.AbstractEventLoop, reports: int, go: int) -> bool:
    """Fork a twin of this life where it stands, its store reopened on the copy at ``path``: ``True`` in the
    twin, ``False`` here once the twin is gone. Refused (said on ``reports``) where a fork would lose what
    the life runs on: a thread of its, or a store the twin could not reopen by its path.

    The twin reports and waits on this life's pipes. Once it is gone, however it went (an ``E`` line, or
    killed where it stood), this life says so (``X``) and lets the words the parent meant for the twin pass
    until the parent's ``x``: none of them is this life's, and none of its lines could pass for the twin's.

    A twin is the life as it stood there, the test's monkeypatches and the run's start included, for the
    price of a fork: the zombies' paused workers and the second-worker probe need no start of their own."""
    if threading.active_count() > 1 or type(store) is not SQLiteCheckpointer:
        os.write(reports, b"N\n")
        return False
    pid = os.fork()
    if pid:
        status = -1
        with contextlib.suppress(ChildProcessError):
            status = os.waitpid(pid, 0)[1]
        os.write(reports, f"X {status}\n".encode())
        while (tag := os.read(go, 1)) != b"x":
            if not tag:  # the parent is gone
                os._exit(1)
            if tag == b"z":  # a wake for the twin, and the time with it
                os.read(go, 8)
        return False
    asyncio.events._set_running_loop(loop)  # asyncio ties a running loop to the process that ran it
    _inherited.append(vars(store).get("_conn"))
    store.path = Path(path)  # reopened there on first use, as by any other process
    selector: Any = getattr(loop, "_selector", None)
    if selector is not None:  # an epoll of its own: one shared with the life it came from carries changes back
        own = type(selector)()
        for key in selector.get_map().values():
            own.register(key.fileobj, key.events, key.data)
        loop._selector = own  # type: ignore[attr-defined]
        selector.close()
    os.write(reports, f"I {os.getpid()}\n".encode())  # who to kill should it overstay
    return True


def _read_stored(line: str, run_id: str, store: Checkpointer) -> dict[str, Any]:
    """How the run stands, from the records a life sent on its ``S`` line (``stored``, decoded here)."""
    sent = pickle.loads(base64.b64decode(line))  # this process's own child wrote it
    records = None if sent is None else [Record(seq, full, data) for seq, full, data in sent]
    return read_records(records, run_id, record_key(store))
