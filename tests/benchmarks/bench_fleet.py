"""A bigger fleet under fire than the test runs: many runs, workers SIGKILLed every 0.2-1 s, the store frozen
and killed, on SQLite and Redis (PostgreSQL when given a URL); prints each verdict and the 8-process race.

    python tests/benchmarks/bench_fleet.py [--runs 300] [--chaos 60] [--rounds 50] [--postgres URL]
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
from tests.fleet.servers import RedisServer


def sqlite_lock(path: Path) -> Callable[[random.Random], None]:
    def fault(rng: random.Random) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        time.sleep(rng.uniform(0.3, 1.0))
        db.execute("ROLLBACK")
        db.close()

    return fault


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--chaos", type=float, default=60.0, help="seconds of kills and store faults")
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the 8-process race")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    options = dict(runs=args.runs, workers=args.workers, chaos_seconds=args.chaos, settle_seconds=120.0)

    db = base / "fleet.db"
    verdict = run_fleet(f"sqlite:///{db}", base / "sqlite", store_fault=sqlite_lock(db), seed=11, **options)
    print(f"sqlite: {verdict}", flush=True)
    drivers = race(f"sqlite:///{base / 'race.db'}", base / "sqlite-race", rounds=args.rounds)
    print(f"sqlite race: {args.rounds} rounds x 8 processes, drivers per round {sorted(set(drivers.values()))}")

    if shutil.which("redis-server"):
        server = RedisServer(base / "redis")
        server.start()
        turns = [0]

        def freeze_or_kill(rng: random.Random) -> None:
            turns[0] += 1
            if turns[0] % 2:
                server.freeze(rng.uniform(0.3, 1.0))
            else:
                server.kill_and_restart(downtime=rng.uniform(0.1, 0.5))

        try:
            verdict = run_fleet(server.url, base / "redis-j", store_fault=freeze_or_kill, seed=12, **options)
            print(f"redis: {verdict}", flush=True)
            drivers = race(server.url.replace("/0", "/1"), base / "redis-race", rounds=args.rounds)
            print(f"redis race: {args.rounds} rounds x 8 processes, drivers per round {sorted(set(drivers.values()))}")
        finally:
            server.stop()
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
