"""The copies of a store that crash scenarios resume on are the user's store again: its class (a subclass of
a checkpointer, from a store factory) and every option it was made with (a record key, a timeout).

A copy on the base class, or without the key, resumes the run on another store than the user's: the overrides
of a subclass never run in resumed lives, and a keyed store's sealed records read as tampered with."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from durableflow import RedisCheckpointer
from durableflow.testing import explore

from .flows import ChargeAsEffect
from .test_planted_bugs import PAYMENTS, SEED

START = {"order": "A-1", "cents": 500}
ACQUIRED = "store-copies-test:acquired"
"""The list each ``Resumes`` pushes its class's name to when a worker asks for a run: what every life ran on."""


class Resumes(RedisCheckpointer):
    """A user's subclass: it counts, in the server itself (lives of kill mode are processes of their own),
    every worker that asked it for a run: a resume."""

    def acquire(self, run_id: str, owner: str, steal_from: str | None = None) -> None:
        self.client.rpush(ACQUIRED, type(self).__name__)
        super().acquire(run_id, owner, steal_from)


def crash_scenarios(report: Any) -> list[str]:
    """The scenarios that crash the run and resume it (not the zombies, the probe or the read-back)."""
    return [o.id for o in report.scenarios if "@" not in o.id]


@pytest.mark.parametrize("mode", ["inprocess", "kill"])
def test_a_redis_checkpointer_subclass_from_a_factory_is_what_resumed_lives_run_on(mode: str, redis_url: str) -> None:
    """Before, a capture copied a ``RedisCheckpointer`` subclass's keys on the server into a plain
    ``RedisCheckpointer``: resumed lives ran on the base class, and the subclass never saw a resume."""
    import redis

    admin = redis.Redis.from_url(redis_url)
    prefixes = (f"user-{n}" for n in itertools.count())
    report = explore(
        ChargeAsEffect, START, mode=mode, store=lambda: Resumes(redis_url, prefix=next(prefixes)), seed=SEED,
        **PAYMENTS,
    )  # fmt: skip

    assert report.ok, report.failure_text()
    resumed = [name.decode() for name in admin.lrange(ACQUIRED, 0, -1)]
    assert len(resumed) >= len(crash_scenarios(report)) > 0
    assert set(resumed) == {"Resumes"}
    admin.close()
