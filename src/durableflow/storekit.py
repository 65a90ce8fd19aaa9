"""Helpers for writing a checkpointer: the status and listing rules every store shares.

The stores durableflow ships use these same functions, so a checkpointer of your own that
calls them reports statuses, pages and refuses bad arguments as they do (the conformance
suite, ``pytest_durableflow.conformance``, checks it).

* ``reported(info)`` turns a row as stored into the ``RunInfo`` that ``info`` and ``runs``
  return: a ``running`` run whose lease lapsed, or whose owner died on this machine, is
  ``interrupted``. ``reported_status`` does the same from the row's fields.
* ``list_runs(page, status, limit, after)`` is a whole ``runs()`` given ``page``: one indexed
  query returning, newest first by ``(created_at, run_id)``, at most ``limit`` rows with one of
  the stored statuses asked for (``None``: any) strictly after a ``(created_at, run_id)`` key.
* ``check_status`` (for ``append``), ``wanted_statuses`` (``runs``), ``terminal_statuses``
  (``purge``) and ``parse_cursor`` (``runs(after=...)``) raise ``ValueError`` for arguments
  a store must refuse.
"""

from __future__ import annotations

from ._checkpointer import (
    STATUSES,
    STORED,
    TERMINAL,
    Page,
    check_status,
    list_runs,
    parse_cursor,
    reported,
    reported_status,
    terminal_statuses,
    wanted_statuses,
)

__all__ = [
    "STATUSES",
    "STORED",
    "TERMINAL",
    "Page",
    "check_status",
    "list_runs",
    "parse_cursor",
    "reported",
    "reported_status",
    "terminal_statuses",
    "wanted_statuses",
]
