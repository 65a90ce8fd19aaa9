"""Eight processes resuming one run at once, 50 times per store: exactly one of them drives it each time."""

from __future__ import annotations

from pathlib import Path

from durableflow import open_checkpointer

from .race import race
from .servers import PostgresServer, RedisServer


def _assert_one_driver_per_round(url: str, journal: Path) -> None:
    drivers = race(url, journal, rounds=50, contenders=8)
    assert {f"race-{index}" for index in range(50)} == set(drivers)
    assert set(drivers.values()) == {1}, {run_id: n for run_id, n in drivers.items() if n != 1}
    checkpointer = open_checkpointer(url)
    try:
        assert {checkpointer.info(f"race-{index}").status for index in range(50)} == {"completed"}
    finally:
        checkpointer.close()


def test_on_sqlite_one_of_eight_processes_drives_each_run(tmp_path: Path) -> None:
    """50 rounds of 8 forked processes resuming one interrupted run in a SQLite file: one driver per round."""
    _assert_one_driver_per_round(f"sqlite:///{tmp_path / 'race.db'}", tmp_path / "journal")


def test_on_redis_one_of_eight_processes_drives_each_run(tmp_path: Path, redis_server: RedisServer) -> None:
    """50 rounds of 8 forked processes resuming one interrupted run in a real redis-server: one driver per round."""
    _assert_one_driver_per_round(redis_server.url, tmp_path / "journal")


def test_on_postgres_one_of_eight_processes_drives_each_run(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """50 rounds of 8 forked processes resuming one interrupted run in a real PostgreSQL: one driver per round."""
    _assert_one_driver_per_round(postgres_server.url, tmp_path / "journal")
