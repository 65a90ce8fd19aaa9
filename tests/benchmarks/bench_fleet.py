"""A bigger fleet under fire than the test runs: many runs, workers SIGKILLed every 0.2-1 s, the store frozen
and killed, on SQLite, Redis and PostgreSQL (each when installed); prints each verdict and the 8-process race.

    python tests/benchmarks/bench_fleet.py [--runs 300] [--chaos 60] [--rounds 50] [--stores sqlite,redis,postgres]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fleet.chaos import run_fleet
from tests.fleet.race import race
from tests.fleet.servers import PostgresServer, RedisServer, pg_bin


def sqlite_lock(path: Path) -> Callable[[random.Random], None]:
    def fault(rng: random.Random) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        time.sleep(rng.uniform(0.3, 1.0))
        db.execute("ROLLBACK")
        db.close()

    return fault


def freeze_or_kill(server: RedisServer | PostgresServer) -> Callable[[random.Random], None]:
    turns = [0]

    def fault(rng: random.Random) -> None:
        turns[0] += 1
        if turns[0] % 2:
            server.freeze(rng.uniform(0.3, 1.0))
        else:
            server.kill_and_restart(downtime=rng.uniform(0.1, 0.5))

    return fault


def report(name: str, url: str, base: Path, fault: Callable[[random.Random], None], args: argparse.Namespace) -> None:
    verdict = run_fleet(
        url, base / f"{name}-fleet", runs=args.runs, workers=args.workers, chaos_seconds=args.chaos,
        settle_seconds=120.0, store_fault=fault, seed=len(name),
    )  # fmt: skip
    print(f"{name}: {verdict}", flush=True)
    race_url = f"sqlite:///{base / 'race.db'}" if name == "sqlite" else url
    drivers = race(race_url, base / f"{name}-race", rounds=args.rounds)
    print(f"{name} race: {args.rounds} rounds x 8 processes, drivers per round {sorted(set(drivers.values()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--chaos", type=float, default=60.0, help="seconds of kills and store faults")
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the 8-process race")
    parser.add_argument("--stores", default="sqlite,redis,postgres", help="which stores, comma-separated")
    args = parser.parse_args()
    stores = args.stores.split(",")
    base = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    try:
        if "sqlite" in stores:
            db = base / "fleet.db"
            report("sqlite", f"sqlite:///{db}", base, sqlite_lock(db), args)
        servers: list[tuple[str, Callable[[], RedisServer | PostgresServer]]] = []
        if "redis" in stores and shutil.which("redis-server"):
            servers.append(("redis", lambda: RedisServer(base / "redis")))
        bin_dir = pg_bin()
        if "postgres" in stores and bin_dir is not None:
            servers.append(("postgres", lambda: PostgresServer(bin_dir)))
        for name, make in servers:
            server = make()
            server.start()
            try:
                report(name, server.url, base, freeze_or_kill(server), args)
            finally:
                server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
