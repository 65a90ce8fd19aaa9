"""``durableflow worker`` and ``durableflow purge``: recover interrupted runs from a shared store; delete old ones."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re

from .._checkpointer import TERMINAL, Checkpointer, without_password
from .._worker import Worker
from ._exits import UsageError
from ._options import add_command, open_store, positive_int, seconds, sqlite_file_missing
from ._workflows import WorkflowRegistry, add_workflow_options

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = add_command(
        commands, "worker", worker_command, "recover interrupted runs of the named workflows until stopped",
        description="Poll the store for runs whose owner is gone (its lease lapsed, or it died on this machine) and "
        "drive them to their end, many at once. Many workers may share one store: each run is driven by one. "
        "SIGTERM or Ctrl-C stops taking runs and waits --grace seconds for those going, then hands the rest "
        "back; a second signal hands them back at once.",
    )  # fmt: skip
    add_workflow_options(worker)
    worker.add_argument(
        "--concurrency", type=positive_int, default=8, metavar="N", help="runs driven at once (default 8)"
    )
    worker.add_argument(
        "--poll", type=_positive_seconds, default=1.0, metavar="SECONDS",
        help="seconds between polls while there is work (default 1); doubled while idle, up to --max-poll",
    )  # fmt: skip
    worker.add_argument(
        "--max-poll", type=_positive_seconds, default=10.0, metavar="SECONDS",
        help="longest pause between polls of an idle store (default 10)",
    )  # fmt: skip
    worker.add_argument(
        "--max-recoveries", type=_recoveries, default=5, metavar="N",
        help="mark a run failed once it was interrupted N times in a row without completing a step "
        "(default 5; 'none': never)",
    )  # fmt: skip
    worker.add_argument(
        "--grace", type=seconds, default=10.0, metavar="SECONDS",
        help="on SIGTERM, how long runs going may take to finish before they are handed back (default 10)",
    )  # fmt: skip
    worker.add_argument(
        "--lease-ttl", type=_positive_seconds, metavar="SECONDS",
        help="seconds a lease lasts without renewal: how soon other machines take over a dead worker's runs "
        "(default: the store's, 30)",
    )  # fmt: skip
    worker.add_argument(
        "--otel",
        action="store_true",
        help="report runs to OpenTelemetry (needs durableflow[otel] and a configured SDK)",
    )

    purge = add_command(
        commands, "purge", purge_command, "delete ended runs older than a given age",
        description="Delete the runs that ended (completed, failed or cancelled) longer ago than --older-than, "
        "with their checkpoints. Runs still going or waiting are never deleted.",
    )  # fmt: skip
    purge.add_argument(
        "--older-than", type=duration, required=True, metavar="DURATION",
        help="age since the run ended: 30d, 12h, 90m, 45s or seconds",
    )  # fmt: skip
    purge.add_argument(
        "--status", action="extend", nargs="+", type=_terminal_status, metavar="STATUS", dest="statuses",
        help=f"only runs that ended so: {', '.join(TERMINAL)} (one or more, repeatable; default all three)",
    )  # fmt: skip


def worker_command(args: argparse.Namespace) -> int:
    registry = WorkflowRegistry.from_args(args)
    factories = [target.factory for target in map(registry.get, registry.names) if target is not None]
    if not factories:
        raise UsageError(
            "name the workflows this worker may run: --workflow MODULE:Class (repeatable), or "
            '[tool.durableflow] workflows = ["MODULE:Class"] in ./pyproject.toml'
        )
    if args.max_poll < args.poll:
        raise UsageError(f"--max-poll ({args.max_poll}) must be at least --poll ({args.poll})")
    if args.otel:
        try:
            from ..otel import instrument
        except ImportError as exc:
            raise UsageError(str(exc)) from None
        instrument()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    checkpointer: Checkpointer = open_store(args.store)
    if args.lease_ttl is not None:
        checkpointer.lease_ttl = args.lease_ttl
    worker = Worker(
        factories, checkpointer, concurrency=args.concurrency, poll_interval=args.poll,
        max_poll_interval=args.max_poll, max_recoveries=args.max_recoveries, grace_period=args.grace,
    )  # fmt: skip
    logging.getLogger("durableflow.worker").info(
        "worker for %s on %s (concurrency %d)",
        ", ".join(registry.names),
        without_password(args.store),
        args.concurrency,
    )
    try:
        asyncio.run(worker.run())
    finally:
        checkpointer.close()
    stats = worker.stats
    print(
        f"recovered {stats.recovered - stats.started} run(s) and started {stats.started}: {stats.completed} "
        f"completed, {stats.failed} failed, {stats.waiting} left waiting, {stats.handed_back} handed back",
        flush=True,
    )
    return 0


def purge_command(args: argparse.Namespace) -> int:
    statuses = tuple(dict.fromkeys(args.statuses or TERMINAL))
    if sqlite_file_missing(args.store):  # nothing to delete: do not leave an empty database behind
        print(f"purged 0 run(s): {args.store} does not exist yet")
        return 0
    checkpointer = open_store(args.store)
    try:
        purged = checkpointer.purge(statuses, args.older_than)
    finally:
        checkpointer.close()
    print(f"purged {purged} run(s) ({', '.join(statuses)}) that ended over {_age(args.older_than)} ago")
    return 0


def duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s`` or a number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h, 90m, 45s or 3600")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _age(value: float) -> str:
    for unit in ("w", "d", "h", "m"):
        if value >= _UNITS[unit] and value % _UNITS[unit] == 0:
            return f"{value / _UNITS[unit]:g}{unit}"
    return f"{value:g}s"


def _terminal_status(text: str) -> str:
    if text not in TERMINAL:
        raise argparse.ArgumentTypeError(
            f"{text!r}: only ended runs are purged ({', '.join(TERMINAL)}); a run still going, waiting or "
            "interrupted is never deleted by purge"
        )
    return text


def _positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _recoveries(text: str) -> int | None:
    if text.lower() == "none":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more, or 'none'")
    return value
