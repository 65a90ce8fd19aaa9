"""What the ``durableflow`` command prints: tables on a console, local times, JSON and clipped text.

Everything shown comes from a store or a run, so it is printed as text, never as markup, and characters
that steer a terminal (escape sequences, carriage returns, bidirectional overrides) are shown escaped.
rich is imported only when a table is printed, so ``--help`` and ``run`` need only the core dependencies.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import unicodedata
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .._checkpointer import RunInfo
from .._errors import install_hint
from .._events import Event, event_fields

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control and format characters (ESC, CR, C1 controls, bidi overrides, zero-width marks), lone surrogates and
line or paragraph separators: each can move the cursor, recolour or reorder what a terminal shows."""
_MAYBE_UNSAFE = re.compile(r"[^\x20-\x7e]")

STATUS_STYLES = {
    "completed": "green",
    "failed": "red",
    "cancelled": "red",
    "running": "yellow",
    "waiting": "cyan",
    "interrupted": "magenta",
}


def console() -> Console:
    """Where tables go."""
    from ._exits import UsageError

    try:
        from rich.console import Console
    except ImportError:
        raise UsageError(f"tables need rich: install {install_hint('cli')}") from None
    out = Console(markup=False, emoji=False, highlight=False)  # "[/]" in a run id is text, not a closing tag
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 200  # piped into grep or a file: a table cropped to 80 columns helps nobody
    return out


def table(*headers: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(*headers, box=box.SIMPLE_HEAD, header_style="bold")


def about(info: RunInfo) -> Table:
    """The run's metadata as a two-column grid."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_row("run", cell(info.run_id))
    grid.add_row("workflow", cell(info.workflow))
    grid.add_row("status", cell(info.status, STATUS_STYLES.get(str(info.status), "")))
    grid.add_row("created", when(info.created_at))
    grid.add_row("updated", when(info.updated_at))
    grid.add_row("last seq", cell(info.last_seq))
    if info.lease_owner:
        # an interrupted run's lease is left by a dead or lapsed owner: nobody holds the run any more
        held = "held by" if info.status != "interrupted" else "last held by (dead or lapsed)"
        grid.add_row("lease", cell(f"{held} {info.lease_owner} until {when(info.lease_expires_at)}"))
    if info.result is not None:
        grid.add_row("result", cell(clip(str(info.result), 400)))
    if info.error:
        grid.add_row("error", cell(info.error, "red"))
    return grid


def cell(value: Any, style: str = "") -> Text:
    """``value`` as a table cell: plain text (markup in it is shown, not applied), escaped by ``printable``."""
    from rich.text import Text

    return Text(printable(value if isinstance(value, str) else str(value)), style=style)


def printable(text: str, newlines: bool = False) -> str:
    """``text`` with every character that could steer a terminal shown as its Python escape (``\\x1b``,
    ``\\u202e``); with ``newlines``, line breaks are kept."""
    if not _MAYBE_UNSAFE.search(text):
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _UNSAFE_CATEGORIES and not (newlines and char == "\n")
        else char
        for char in text
    )


def names(items: Any, most: int = 8) -> str:
    """``items`` as a comma-separated list, the first ``most`` of them."""
    listed = [str(item) for item in items]
    more = f" (+{len(listed) - most} more)" if len(listed) > most else ""
    return ", ".join(listed[:most]) + more


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def when(timestamp: float | None, compact: bool = False) -> str:
    """Local time; ``compact`` gives only the time for today, and drops the seconds otherwise."""
    if timestamp is None:
        return "-"
    try:
        moment = datetime.datetime.fromtimestamp(timestamp)
    except (TypeError, ValueError, OverflowError, OSError):  # not a time any clock gave
        return printable(f"?{timestamp!r}")
    if not compact:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.date.today() else "%Y-%m-%d %H:%M")


def as_json(value: Any) -> str:
    """``value`` as one line of JSON; characters that could steer a terminal are written as ``\\uXXXX``
    escapes, which JSON reads back as the same characters."""
    if isinstance(value, Event):  # undeclared fields beside the declared ones, as the user wrote them
        text = json.dumps(event_fields(value), ensure_ascii=False)
    elif isinstance(value, BaseModel):
        text = value.model_dump_json()
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            return printable(repr(value))
    if not _MAYBE_UNSAFE.search(text):
        return text
    return "".join(
        json.dumps(char)[1:-1] if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in text
    )
