"""The command line's shared options, and the checked values they give: JSON fields, ``--respond``, the store."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .._checkpointer import Checkpointer, open_checkpointer
from .._errors import RunNotFoundError
from .._events import HumanResponseEvent
from .._framing import KEY_ENV, record_key
from .._serialization import MAX_DEPTH, json_depth
from ._exits import DEFAULT_STORE, EPILOG, UsageError
from ._output import clip, printable

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
        help="where runs are kept: sqlite:///path, redis://host:port/db, postgresql://host/db or memory://"
        f" (default {DEFAULT_STORE})",
    )  # fmt: skip
    return store


def add_respond(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--respond", metavar="JSON",
        help="answer every input request with a HumanResponseEvent of these fields, like '{\"response\": \"yes\"}' "
        "(sent too to a step that waits for one without asking; without it, a run that asks for input exits 7)",
    )  # fmt: skip


def seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def run_id(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    if printable(text) != text:
        raise argparse.ArgumentTypeError(
            f"must be printable text: {printable(text)} holds control, format or undecodable characters, "
            "which would reach every terminal that lists the run"
        )
    return text


def stored_run_id(text: str) -> str:
    """A run id to look up: any text (a stored id may hold anything), but text: bytes that are not UTF-8
    reach Python as lone surrogates, which no store can be asked for."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{printable(text)} is not UTF-8 text, so no stored run has it") from None
    return text


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def input_fields(text: str, option: str = "--input") -> dict[str, Any]:
    """The JSON object ``text`` holds, checked to be stored and read back as it is (or ``UsageError``)."""
    if json_depth(text) > MAX_DEPTH:
        raise UsageError(f"{option} nests lists and objects more than {MAX_DEPTH} levels deep; flatten it")
    try:
        fields = json.loads(text, parse_constant=_not_a_number, parse_float=_finite)
    except ValueError as exc:
        if "Exceeds the limit" in str(exc):
            raise UsageError(f"{option} holds an integer of more than 4300 digits; pass it as a string") from None
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise UsageError(
            f"{option} must be a JSON object of event fields, like '{{\"ids\": [1, 2]}}', not {clip(text, 40)!r}"
        )
    try:
        json.dumps(fields, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise UsageError(f"{option} holds a lone surrogate escape (like \\ud800), which is not text") from None
    private = sorted(key for key in fields if key.startswith("_"))
    if private:
        raise UsageError(f"{option} names {', '.join(map(repr, private))}: event fields do not start with '_'")
    return fields


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a number JSON can hold; pass it as a string")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a float; pass it as a string")
    return value


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
    if sqlite_file_missing(url) and must_exist is not None:
        raise RunNotFoundError(
            must_exist,
            url,
            detail=f"no run {must_exist!r}: {url} does not exist; name the store the run was started on with "
            "--store (sqlite:///PATH, redis://HOST:PORT/DB, postgresql://USER@HOST/DB)",
        )
    try:
        record_key()  # a key too short to be one is refused now, not at the first record
        return open_checkpointer(url)
    except (ValueError, ImportError) as exc:  # an unknown scheme, redis-py not installed, a key too short
        raise UsageError(f"{exc} (${KEY_ENV})" if "record key" in str(exc) else str(exc)) from None


def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite file that does not exist yet; ``UsageError`` if it names no file at all."""
    if not url.startswith("sqlite:///"):
        return False
    path = url[len("sqlite:///") :]
    if not path:
        raise UsageError("--store sqlite:/// needs a file after it, like sqlite:///runs.db")
    if os.path.isdir(path):
        raise UsageError(
            f"--store {url} names a directory; name a file in it, like sqlite:///{path.rstrip('/')}/runs.db"
        )
    return not os.path.exists(path)
