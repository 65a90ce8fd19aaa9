"""Kill mode's shared world listens on Unix sockets, whose paths the kernel caps (108 bytes on Linux, 104 on
macOS): a long temporary directory must not keep it from serving."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import pytest
import redis

from durableflow import Context, Resource, StartEvent, StopEvent, Workflow, step
from durableflow.testing import _redisserver
from durableflow.testing._world import FakeWorld
from pytest_durableflow import explore

from .flows import FakePayments, Payments, get_payments


def get_redis() -> redis.Redis:
    return redis.Redis(host="localhost", port=6379, decode_responses=True)


class ConvertThenCharge(Workflow):
    """Right: an idempotent write to Redis, then a charge as an effect, reaching a fake of the user's."""

    @step
    async def convert(
        self, ev: StartEvent, ctx: Context, client: Annotated[redis.Redis, Resource(get_redis)], payments: Payments
    ) -> StopEvent:
        client.hset("converted", "1", "text")
        return StopEvent(result=await ctx.effect("charge", payments.charge, "order-1", 500))


@pytest.fixture
def long_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory whose path alone leaves no room for a socket's name under it."""
    long = tmp_path / ("t" * 100)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert len(os.fsencode(os.path.join(tempfile.gettempdir(), "durableflow-redis-xxxxxxxx", "redis.sock"))) > 108
    return long


def test_kill_mode_serves_its_world_under_a_temporary_directory_too_long_for_a_socket(long_tmpdir: Path) -> None:
    """The world's Redis and the user's fakes are served from a directory whose path fits, and every life
    reaches both."""
    report = explore(ConvertThenCharge, {}, mode="kill", fakes={get_payments: FakePayments}, seed=1)
    report.assert_ok()
    assert len(report.scenarios) > 1
    assert list(long_tmpdir.iterdir()) == []  # nothing of the world was made there


def test_a_world_with_no_directory_short_enough_is_served_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no directory's path leaves room for a socket's name, Redis and the fakes are served on loopback."""
    monkeypatch.setattr(_redisserver, "_SUN_PATH", 8)
    world = FakeWorld(fakes={get_payments: FakePayments}, shared=True)
    try:
        assert isinstance(world.redis_address, tuple)
        assert isinstance(world.address()["registry"][0], tuple)  # the fakes' manager: a (host, port)
        client = world.redis_client(fresh=True)
        assert client.ping() is True
        client.close()
    finally:
        world.close()
