"""What the ``durableflow`` command prints: tables on a console, local times, JSON and clipped text.

rich is imported only when a table is printed, so ``--help`` and ``run`` need only the core dependencies.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .._checkpointer import RunInfo
from .._events import Event, event_fields

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

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
        raise UsageError("tables need rich: install durableflow[cli] (pip install 'durableflow[cli]')") from None
    out = Console()
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
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_row("run", info.run_id)
    grid.add_row("workflow", Text(info.workflow))
    grid.add_row("status", Text(info.status, style=STATUS_STYLES.get(info.status, "")))
    grid.add_row("created", when(info.created_at))
    grid.add_row("updated", when(info.updated_at))
    grid.add_row("last seq", str(info.last_seq))
    if info.lease_owner:
        grid.add_row("leased by", Text(f"{info.lease_owner} until {when(info.lease_expires_at)}"))
    if info.result is not None:
        grid.add_row("result", Text(clip(info.result, 400)))
    if info.error:
        grid.add_row("error", Text(info.error, style="red"))
    return grid


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
    moment = datetime.datetime.fromtimestamp(timestamp)
    if not compact:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.date.today() else "%Y-%m-%d %H:%M")


def as_json(value: Any) -> str:
    if isinstance(value, Event):  # undeclared fields beside the declared ones, as the user wrote them
        return json.dumps(event_fields(value), ensure_ascii=False)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
