"""The ``durableflow`` command: start, resume and inspect durable runs from a shell, and crash-test a workflow.

Each command lives in a module of its own that registers its subparser; exit codes are ``EXIT_CODES``
(``durableflow --help`` lists them).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence

from . import _crashtest, _fleet, _inspect, _run
from ._exits import EPILOG, EXIT_CODES, UsageError, WaitsForInput, exit_code, explain
from ._options import Command
from ._output import as_json, printable

__all__ = ["EXIT_CODES", "UsageError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``durableflow`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    command: Command = args.command
    try:
        return command(args)
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if code is None:
            raise
        if isinstance(exc, WaitsForInput):
            print(as_json(exc.request))  # after the run id, where the result would be: what the run asks
        for line in explain(exc, crashtest=args.command_name == "crashtest"):
            print(printable(line, newlines=True), file=sys.stderr)
        return code


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command module adds its subcommands."""
    parser = argparse.ArgumentParser(
        prog="durableflow",
        description="Start, resume and inspect durable workflow runs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"durableflow {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in (_run, _inspect, _fleet, _crashtest):
        module.register(commands)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("durableflow")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "(not installed)"
