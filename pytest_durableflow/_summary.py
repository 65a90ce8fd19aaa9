"""The session's view of its explorations: the terminal summary, and the HTML crash matrix."""

from __future__ import annotations

from typing import Any


def summary_lines(explorations: list[dict[str, Any]], seed: int) -> list[str]:
    """One line for the session, one per exploration, slowest first (at most ten)."""
    scenarios = sum(len(e["scenarios"]) for e in explorations)
    failed = sum(1 for e in explorations for s in e["scenarios"] if s[1])
    lines = [
        f"{len(explorations)} explorations, {scenarios} scenarios, {failed} failed (session seed {seed})",
    ]
    width = max(len(e["test"]) for e in explorations)
    for exploration in sorted(explorations, key=lambda e: -e["seconds"])[:10]:
        count = len(exploration["scenarios"])
        bad = sum(1 for s in exploration["scenarios"] if s[1])
        slowest = max(exploration["scenarios"], key=lambda s: s[4], default=None)
        slow = f", slowest {slowest[0]} {slowest[4] * 1000:.0f}ms" if slowest else ""
        lines.append(
            f"  {exploration['test']:<{width}}  {exploration['mode']:<9} depth {exploration['depth']}  "
            f"{count:>5} scenarios  {bad:>4} failed  {exploration['seconds']:6.2f}s{slow}"
        )
    return lines


def write_html(explorations: list[dict[str, Any]], path: str) -> None:
    from ._html import crash_matrix

    with open(path, "w", encoding="utf-8") as out:
        out.write(crash_matrix(explorations))
