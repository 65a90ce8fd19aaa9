"""A fleet of workers sharing one store, SIGKILLed every 0.2-1 s and restarted while the store is frozen and killed:
every run completes with the reference result, none is lost, none is driven by two workers at once, and an effect
repeats only under its own idempotency key. (``tests/benchmarks/bench_fleet.py`` runs it bigger.)"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .chaos import run_fleet, worker_name
from .servers import PostgresServer, RedisServer

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="the fleet forks its workers")


def test_a_fleet_on_sqlite_loses_nothing_and_drives_each_run_once(tmp_path: Path) -> None:
    """SQLite, with workers killed at random and the file locked by another writer for up to a second at a time."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"

    def lock_the_file(rng: random.Random) -> None:
        db = sqlite3.connect(tmp_path / "fleet.db", isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            time.sleep(rng.uniform(0.3, 1.0))
            db.execute("ROLLBACK")
        finally:
            db.close()

    verdict = run_fleet(url, tmp_path / "journal", runs=48, store_fault=lock_the_file, seed=1)
    assert verdict.ok, str(verdict)
    assert verdict.kills >= 5 and verdict.store_faults >= 2


def _freeze_or_kill(server: RedisServer | PostgresServer) -> Callable[[random.Random], None]:
    turns = [0]

    def fault(rng: random.Random) -> None:
        turns[0] += 1
        if turns[0] % 2:
            server.freeze(rng.uniform(0.3, 1.0))
        else:
            server.kill_and_restart(downtime=rng.uniform(0.1, 0.5))

    return fault


def test_a_fleet_on_redis_survives_the_server_frozen_and_killed(tmp_path: Path, redis_server: RedisServer) -> None:
    """A real redis-server (append-only, fsync always), frozen for up to a second, or SIGKILLed and restarted."""
    verdict = run_fleet(
        redis_server.url, tmp_path / "journal", runs=48, store_fault=_freeze_or_kill(redis_server), seed=2
    )
    assert verdict.ok, str(verdict)
    assert verdict.kills >= 5 and verdict.store_faults >= 2


def test_a_fleet_on_postgres_survives_the_server_frozen_and_crashed(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """A real PostgreSQL, its processes SIGSTOPped for up to a second, or stopped in immediate mode and restarted."""
    fault = _freeze_or_kill(postgres_server)
    verdict = run_fleet(postgres_server.url, tmp_path / "journal", runs=48, store_fault=fault, seed=3)
    assert verdict.ok, str(verdict)
    assert verdict.kills >= 5 and verdict.store_faults >= 2


def test_a_worker_cut_off_from_the_store_longer_than_the_lease_stops_before_another_takes_over(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """One worker's PostgreSQL session SIGSTOPped for 4.5 s, over twice the 2 s lease, while the other workers
    go on (and are killed at random): they take its runs over once the leases lapse, and it has stopped them
    before that, so no run is driven by two. (With a 1 s lease the 0.2 s a run keeps in hand was, on a loaded
    machine, less than the cut-off worker's own scheduling delay: a paused process, not a frozen store.)"""
    frozen: list[bool] = []

    def cut_off(pid: int, rng: random.Random) -> None:
        frozen.append(postgres_server.freeze_session(worker_name(pid), 4.5))

    verdict = run_fleet(
        postgres_server.url, tmp_path / "journal", runs=40, lease_ttl=2.0, chaos_seconds=12.0, store_faults_every=2.0,
        cut_off=cut_off, seed=4,
    )  # fmt: skip
    assert verdict.ok, str(verdict)
    assert frozen.count(True) >= 2


def test_the_verdict_counts_steps_of_two_processes_at_once_as_driven_by_two() -> None:
    """The overlap check flags two processes' steps that overlap in time, and not one process's nor ones in turn."""
    from .chaos import _overlap

    assert _overlap([(0.0, 10.0, 1), (1.0, 2.0, 1), (5.0, 6.0, 2)])  # 2 ran while 1 was still in its step
    assert not _overlap([(0.0, 1.0, 1), (1.0, 2.0, 1), (2.5, 3.0, 2)])  # 2 took over after 1 died
    assert not _overlap([(0.0, 3.0, 1), (1.0, 2.0, 1)])  # one process, steps nested: not two drivers


def test_a_killed_worker_died_when_the_signal_was_sent_however_late_waitpid_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other workers take a killed worker's runs over as soon as it is dead: its time of death is the kill, not
    when a loaded machine lets the fleet's own process see it reaped (which would turn their steps into overlaps)."""
    import os

    from .chaos import Fleet

    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    reaped = os.waitpid

    def late_waitpid(pid: int, options: int) -> tuple[int, int]:
        time.sleep(0.5)  # this process descheduled after the child died
        return reaped(pid, options)

    monkeypatch.setattr(os, "waitpid", late_waitpid)
    fleet = Fleet("unused://", tmp_path, pids=[pid])
    sent = time.time()
    fleet.kill_one(random.Random(0))
    assert fleet.deaths[pid] - sent < 0.25, fleet.deaths[pid] - sent
