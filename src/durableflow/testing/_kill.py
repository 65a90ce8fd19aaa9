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
import contextlib
import gc
import json
import math
import os
import select
import signal
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durableflow import _crashpoints, get_clock

from ._clock import FrozenClock, real_monotonic
from ._lives import Errands, Hits, Life, NeedsInput, ResumeFailed, _at, overstayed, probe_second_worker, read_back
from ._stores import stored
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
    reap = _reaper(zygote)
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
                pid = zygote.fork(
                    exploration.zygote_key, address, first, capture, clock=now, reports=report_write, go=go_read,
                    errands=wanted,
                )  # fmt: skip
        finally:
            os.close(report_write)  # the child's ends: it keeps its own copies
            os.close(go_read)
        life = _follow(exploration, store, pid, report_read, go_write, reap, errands)
    finally:
        os.close(report_read)
        os.close(go_write)
    clock = get_clock()
    if life.clock is not None and isinstance(clock, FrozenClock):
        clock.move_to(life.clock)  # the time the child saw pass has passed here too
    return life


def _reaper(zygote: Zygote | None) -> Callable[[int], None]:
    """How a dead life is reaped: by its parent, this process or the zygote."""
    if zygote is not None:
        return zygote.reap

    def reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    return reap


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
    # parent's objects out of the collector's sight, and let the short-lived child never collect.
    gc.freeze()
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - measured through the parent's report
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
        gc.unfreeze()
    return pid


def _follow(
    exploration: Exploration,
    store: Checkpointer,
    pid: int,
    reports: int,
    go: int,
    reap: Callable[[int], None],
    errands: Errands | None,
) -> Life:
    """Read the child's reports as they come, capturing where it waits, until it exits or overstays.

    Whatever goes wrong here (a fake that cannot be copied, Ctrl-C) kills the
    child first: it must not go on unsupervised.
    """
    life = Life(ending="error", error="the process died before it finished (os._exit or a signal in the workflow?)")
    try:
        _supervise(life, exploration, store, pid, reports, go, reap, errands)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, ChildProcessError, OSError, EOFError):
            os.kill(pid, signal.SIGKILL)
            reap(pid)
        for capture in life.captures.values():  # nobody will resume from them
            capture.store.close()
        raise
    return life


def _supervise(
    life: Life,
    exploration: Exploration,
    store: Checkpointer,
    pid: int,
    reports: int,
    go: int,
    reap: Callable[[int], None],
    errands: Errands | None = None,
) -> None:
    """Fill in ``life`` from the child's reports; only the child's own time counts against the hang bound."""
    bound = exploration.settings.hang_after
    give_up = real_monotonic() + bound
    pending = b""
    while True:
        ready, _, _ = select.select([reports], [], [], max(0.0, give_up - real_monotonic()))
        chunk = os.read(reports, 65536) if ready else None
        if not chunk:
            if chunk is None:  # overstayed its bound
                os.kill(pid, signal.SIGKILL)
                life.ending, life.error = "hang", overstayed(bound)
            reap(pid)  # reaped, so that its lease counts as held by a dead process
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            tag, _, rest = line.decode(errors="replace").partition(" ")
            if tag == "H":
                life.hits.append(rest)
            elif tag == "T":
                life.clock = float(rest)
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
                    os.write(go, b"g")
                give_up += real_monotonic() - began  # the child stood still meanwhile: not its time
            elif tag == "L":
                life.probe = rest.replace("\\n", "\n")
            elif tag == "R":
                life.round_trip = rest.replace("\\n", "\n")
            elif tag == "S":
                life.stored = json.loads(rest)
            elif tag == "E":
                ending, _, error = rest.partition(" ")
                life.ending, life.error = ending, error or None


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

    def write(line: str) -> None:
        os.write(fd, line.encode() + b"\n")

    def listener(point: str) -> None:
        hit = hits.hit(point)
        write(f"H {hit}")
        if frozen:
            write(f"T {clock.now()!r}")
        if reading_back and point == "checkpoint.write.after" and not read_failed:
            differs = read_back(store, exploration.run_id, exploration.lives.handler, hit)
            if differs is not None:
                read_failed.append(differs)
                write("R " + differs.replace("\n", "\\n"))
        if hit == probe_at:
            found = probe_second_worker(store, exploration.run_id, clock if isinstance(clock, FrozenClock) else None)
            if found is not None:
                write(f"L {found}")
        if capture is None or hit in capture or _at(hit, len(hits.list) - 1, pause_at, pause_position):
            write("P")
            tag = os.read(go, 1)
            if not tag:  # the parent is gone: nobody would ever read or reap this life
                os._exit(1)
            if tag == b"z":  # woken after a pause: the time the world moved on to meanwhile
                (wake,) = struct.unpack("!d", os.read(go, 8))
                if isinstance(clock, FrozenClock) and not math.isnan(wake):
                    clock.move_to(wake)

    asyncio.events._set_running_loop(None)  # forked from inside a running loop, perhaps
    try:
        with _crashpoints.armed(listener), exploration.world.serving():
            loop.run_until_complete(exploration.lives.drive(store, first))
        write(f"S {json.dumps(stored(store, exploration.run_id))}")  # its connection is open: spare the parent one
        write("E finished")
    except NeedsInput as exc:
        write(f"E input {exc}")
    except ResumeFailed as exc:
        write(f"E error {exc}")
    except BaseException as exc:
        write(f"E error the life raised {type(exc).__name__}: {exc}")
    finally:
        if frozen:
            write(f"T {clock.now()!r}")
