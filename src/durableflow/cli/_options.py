"""The command line's shared options, and the checked values they give: JSON fields, ``--respond``, the store."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .._checkpointer import Checkpointer, open_checkpointer
from .._errors import RunNotFoundError
from .._events import HumanResponseEvent
from ._exits import DEFAULT_STORE, EPILOG, UsageError

Command = Callable[[argparse.Namespace], int]


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Command,
    summary: str,
    *,
    store: bool = True,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand running ``handler``; with ``store``, it takes ``--store URL`` like every command on one store."""
    sub = commands.add_parser(
        name, parents=[_store_option()] if store else [], help=summary, description=description or summary,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.set_defaults(command=handler, command_name=name)
    return sub


def _store_option() -> argparse.ArgumentParser:
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store", default=DEFAULT_STORE, metavar="URL",
        help=f"where runs are kept: sqlite:///path, redis://host:port/db or memory:// (default {DEFAULT_STORE})",
    )  # fmt: skip
    return store


def add_respond(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--respond", metavar="JSON",
        help="answer every input request with a HumanResponseEvent of these fields, like '{\"response\": \"yes\"}' "
        "(without it, a run that asks for input exits 7)",
    )  # fmt: skip


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def run_id(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def input_fields(text: str, option: str = "--input") -> dict[str, Any]:
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise UsageError(f"{option} must be a JSON object of event fields, like '{{\"ids\": [1, 2]}}', not {text!r}")
    return fields


def answer(respond: str | None) -> dict[str, Any] | None:
    """The fields of the ``HumanResponseEvent`` that ``--respond`` gives every input request, checked now."""
    if respond is None:
        return None
    fields = input_fields(respond, "--respond")
    try:
        HumanResponseEvent(**fields)
    except ValidationError as exc:
        raise UsageError(f"--respond does not make a HumanResponseEvent: {exc}") from None
    return fields


def open_store(url: str, must_exist: str | None = None) -> Checkpointer:
    """The store at ``url``; with ``must_exist`` (a run id), a missing SQLite file is a missing run, not a new file."""
    if must_exist is not None and sqlite_file_missing(url):
        raise RunNotFoundError(must_exist, url)
    try:
        return open_checkpointer(url)
    except (ValueError, ImportError) as exc:  # an unknown scheme, or redis-py is not installed
        raise UsageError(str(exc)) from None


def sqlite_file_missing(url: str) -> bool:
    return url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :])
