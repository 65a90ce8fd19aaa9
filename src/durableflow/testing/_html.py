"""The crash matrix as one self-contained HTML page: no scripts, no external files.

Each exploration is a grid: the first crash point down the side; at depth 2
the crash point of the resume across the top (the first column is the
scenario with no second crash). A cell's colour is its outcome; a failing
cell links to its diff and the line that re-runs it.
"""

from __future__ import annotations

from html import escape

from ._report import KINDS, ExplorationSummary, ScenarioSummary

_KIND_COLOURS = (
    "#c62828", "#ad1457", "#ef6c00", "#f9a825", "#9e9d24", "#4527a0", "#37474f", "#78909c", "#6a1b9a", "#8d6e63",
)  # fmt: skip
"""One per failure kind, in ``KINDS`` order: reds for lost and duplicated work, through to grey for unreached."""

_COLOURS: dict[str | None, str] = {None: "#2e7d32", **dict(zip(KINDS, _KIND_COLOURS, strict=True))}
"""Each outcome's colour, passed (``None``) first; the legend lists them in this order."""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 32px; }
.meta { color: #555; }
table.matrix { border-collapse: collapse; margin: 8px 0; }
.matrix th { font: 11px ui-monospace, monospace; padding: 2px 4px; white-space: nowrap; }
.matrix th.col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; }
.matrix th.row { text-align: right; }
.matrix td { width: 16px; height: 16px; border: 1px solid #fff; padding: 0; }
.matrix td.none { background: #eee; }
.matrix td a { display: block; width: 100%; height: 100%; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
.failure { border-left: 4px solid #c62828; padding: 4px 12px; margin: 12px 0; background: #fafafa; }
.failure:target { background: #fff3e0; }
pre { font: 12px ui-monospace, monospace; white-space: pre-wrap; margin: 4px 0; }
code { font: 12px ui-monospace, monospace; background: #f0f0f0; padding: 1px 4px; }
"""


def write_html(explorations: list[ExplorationSummary], path: str) -> None:
    """Write the crash matrix of ``explorations`` to ``path``."""
    with open(path, "w", encoding="utf-8") as out:
        out.write(crash_matrix(explorations))


def crash_matrix(explorations: list[ExplorationSummary]) -> str:
    """The page for every exploration of a session (as ``_report.summary_of`` summarises them)."""
    total = sum(len(e["scenarios"]) for e in explorations)
    failed = sum(1 for e in explorations for s in e["scenarios"] if s["kind"])
    body = [
        "<h1>durableflow crash matrix</h1>",
        f'<p class="meta">{len(explorations)} explorations, {total} scenarios, {failed} failed</p>',
        _legend(),
    ]
    for index, exploration in enumerate(explorations):
        body.append(_exploration(index, exploration))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>durableflow crash matrix</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def _legend() -> str:
    items = "".join(
        f'<span><i style="background:{colour}"></i>{escape(kind or "passed")}</span>'
        for kind, colour in _COLOURS.items()
    )
    return f'<p class="legend">{items}</p>'


def _exploration(index: int, exploration: ExplorationSummary) -> str:
    scenarios = exploration["scenarios"]
    cells: dict[tuple[str, str], ScenarioSummary] = {}
    rows: list[str] = []
    columns: list[str] = [""]
    for scenario in scenarios:
        first, _, second = scenario["id"].partition(">")
        if first not in rows:
            rows.append(first)
        if second not in columns:
            columns.append(second)
        cells[first, second] = scenario
    failures = [s for s in scenarios if s["kind"]]
    head = "".join(f'<th class="col">{escape(c or "(resume only)")}</th>' for c in columns) if len(columns) > 1 else ""
    lines = [
        f"<h2>{escape(exploration['test'])}</h2>",
        f'<p class="meta">{escape(exploration["workflow"])} &middot; mode {escape(exploration["mode"])} '
        f"&middot; depth {exploration['depth']} &middot; seed {exploration['seed']} &middot; "
        f"{len(scenarios)} scenarios of {exploration['space']}, {len(failures)} failed"
        f"{' &middot; interrupted: the rest never ran' if exploration.get('interrupted') else ''}</p>",
        '<table class="matrix">',
        f"<tr><th></th>{head}</tr>" if head else "",
    ]
    for row in rows:
        tds = "".join(_cell(index, cells.get((row, column))) for column in columns)
        lines.append(f'<tr><th class="row">{escape(row)}</th>{tds}</tr>')
    lines.append("</table>")
    for scenario in failures:
        scenario_id, kind, diff, rerun = scenario["id"], scenario["kind"] or "", scenario["diff"], scenario["rerun"]
        lines.append(
            f'<div class="failure" id="{_anchor(index, scenario_id)}">'
            f"<b>{escape(scenario_id)}</b> &mdash; {escape(kind)}"
            f"<pre>{escape(diff)}</pre>" + (f"re-run: <code>{escape(rerun)}</code>" if rerun else "") + "</div>"
        )
    return "\n".join(lines)


def _cell(index: int, scenario: ScenarioSummary | None) -> str:
    if scenario is None:
        return '<td class="none"></td>'
    scenario_id, kind = scenario["id"], scenario["kind"]
    title = escape(f"{scenario_id}: {kind or 'passed'}")
    colour = _COLOURS.get(kind, "#000")
    link = f'<a href="#{_anchor(index, scenario_id)}"></a>' if kind else ""
    return f'<td style="background:{colour}" title="{title}">{link}</td>'


def _anchor(index: int, scenario_id: str) -> str:
    return f"x{index}-" + "".join(c if c.isalnum() else "-" for c in scenario_id)
