"""Which scenarios an exploration runs: every crash point, or a seeded sample of them, split across shards."""

from __future__ import annotations

import random

from ._judge import same_place
from ._settings import Settings
from ._zombies import ZOMBIE


def check_known(scenario_id: str, hits: list[str], workflow: str) -> None:
    """A replayed id whose first crash point the uninterrupted run never reaches is unknown, not unreached."""
    __tracebackhide__ = True
    point = scenario_id.removeprefix(ZOMBIE).partition(">")[0]
    if point not in hits and not any(same_place(hit, point) for hit in hits):
        shown = ", ".join(hits[:12]) + (" ..." if len(hits) > 12 else "")
        raise ValueError(
            f"unknown scenario {scenario_id!r}: an uninterrupted run of {workflow} never reaches "
            f"{point}; its crash points are {shown}"
        )


def budget(settings: Settings) -> int | None:
    """This shard's share of ``max_scenarios``."""
    total, shard = settings.max_scenarios, settings.shard
    if total is None or shard is None:
        return total
    index, count = shard
    return total // count + (1 if index < total % count else 0)


def sample(space: list[str], settings: Settings, seed: int, budget: int | None = None) -> list[str]:
    """At most ``budget`` (default ``max_scenarios``) of ``space``, in order, chosen by ``seed``."""
    budget = settings.max_scenarios if budget is None else budget
    if budget is None or len(space) <= budget:
        return space
    chosen = set(random.Random(f"{seed}:{len(space)}").sample(range(len(space)), budget))
    return [s for i, s in enumerate(space) if i in chosen]


def shard(plan: list[str], settings: Settings) -> list[str]:
    """This shard's share of ``plan``: every count-th scenario from its index."""
    if settings.shard is None:
        return plan
    index, count = settings.shard
    return plan[index::count]
