"""Kill mode: each life of the run happens in a forked child that SIGKILLs itself at its crash point.

The child reports as it goes over a pipe — every crash point it reaches and
the frozen time — so that what it did before dying reaches the parent. The
world it acts on (fakeredis, the user's fakes) lives in the parent, the way a
real system outlives the process that called it. The parent never runs the workflow itself: each resume is a fresh
fork of a process that holds none of the run's memory.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import select
import signal
from typing import TYPE_CHECKING

from durableflow import _crashpoints, get_clock

from ._clock import FrozenClock, real_monotonic
from ._harness import Life, NeedsInput, ResumeFailed

if TYPE_CHECKING:
    from durableflow import Checkpointer

    from ._harness import Exploration


def live_in_child(exploration: Exploration, store: Checkpointer, target: str | None, first: bool) -> Life:
    read_end, write_end = os.pipe()
    # A child that collects garbage touches every inherited object and copies its page: keep the
    # parent's objects out of the collector's sight, and let the short-lived child never collect.
    gc.freeze()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - measured through the parent's report
        gc.disable()
        os.close(read_end)
        try:
            _child(exploration, store, target, first, write_end)
        finally:
            os._exit(0)  # no atexit, no pytest teardown: the child only ever lives this one life
    gc.unfreeze()
    os.close(write_end)
    life = Life(ending="crashed")
    data = _read_until_exit(read_end, pid, exploration.settings.hang_after, life)
    os.close(read_end)
    for line in data.decode(errors="replace").splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "H":
            life.hits.append(rest)
        elif tag == "T":
            life.clock = float(rest)
        elif tag == "E":
            ending, _, error = rest.partition(" ")
            life.ending, life.error = ending, error or None
        elif tag == "S":
            life.stored = json.loads(rest)
    clock = get_clock()
    if life.clock is not None and isinstance(clock, FrozenClock):
        clock.move_to(life.clock)  # time the dead process saw pass keeps counting in the next life
    return life


def _read_until_exit(fd: int, pid: int, bound: float, life: Life) -> bytes:
    chunks = []
    give_up = real_monotonic() + bound
    while True:
        remaining = give_up - real_monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            life.ending = "hang"
            return b"".join(chunks)
        chunk = os.read(fd, 65536)
        if not chunk:
            os.waitpid(pid, 0)  # reaped, so that its lease counts as held by a dead process
            return b"".join(chunks)
        chunks.append(chunk)


def _child(exploration: Exploration, store: Checkpointer, target: str | None, first: bool, fd: int) -> None:
    clock = get_clock()
    frozen = isinstance(clock, FrozenClock)
    counts: dict[str, int] = {}

    def write(line: str) -> None:
        os.write(fd, line.encode() + b"\n")

    def listener(point: str) -> None:
        count = counts[point] = counts.get(point, 0) + 1
        hit = f"{point}#{count}"
        write(f"H {hit}")
        if frozen:
            write(f"T {clock.now()!r}")
        if hit == target:
            os.kill(os.getpid(), signal.SIGKILL)

    asyncio.events._set_running_loop(None)  # forked from inside a running loop, perhaps
    loop = asyncio.new_event_loop()
    try:
        with _crashpoints.armed(listener), exploration.world.serving():
            loop.run_until_complete(exploration.drive(store, first))
        write(f"S {json.dumps(exploration.stored(store))}")  # its connection is open: spare the parent one
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
