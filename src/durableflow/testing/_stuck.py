"""A life whose run can do nothing on its own any more is stuck: it is told at once, not after the hang bound.

In an exploration nobody sends events from outside but ``respond``, which
answers each input request as it reaches the stream. So once a run is idle
(``durableflow._idle``: every step under way waits in ``ctx.wait_for_event``,
none is due) and the stream holds nothing left to answer, it will wait for
ever: after a restart, that is a question that died with the process, or an
event the dead life was to send. Waiting out the bound would only report a
hang, and cost seconds a scenario.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from durableflow import _idle

from ._judge import STUCK as PREFIX

if TYPE_CHECKING:
    from durableflow._runner import Runner

_TURNS = 50
"""Rounds of the loop given to the stream's reader to answer what was just asked, before idleness counts."""


class Stuck(Exception):
    """The run can do nothing on its own and nobody is left to send what it waits for."""


def what_it_waits_for(runner: Runner) -> str:
    waits = [f"step {w.step!r} waits for a {w.event_type.__name__}" for w in _idle.waits(runner)]
    return PREFIX + ("; ".join(waits) or "no step is left to run")


async def watch(runner: Runner, life: asyncio.Task[None], told: list[str]) -> None:
    """Cancel ``life`` once the run stays idle with nothing left on its stream, saying why in ``told``."""
    while True:
        await _idle.watch(runner)
        for _ in range(_TURNS):  # an input request just streamed: its answer comes from the reader's turn
            await asyncio.sleep(0)
        if _idle.idle(runner) and not runner.stream and not runner.done:
            told.append(what_it_waits_for(runner))
            life.cancel()
            return
        await asyncio.sleep(0)
