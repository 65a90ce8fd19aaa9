"""The HTML crash matrix: one cell per scenario, coloured by outcome, and it renders in a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import pytest
from redis import Redis

from durableflow import Context, Resource, StartEvent, StopEvent, Workflow, step
from durableflow.testing import ExplorationSummary, crash_matrix, summary_of
from pytest_durableflow import explore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PASSED, DUPLICATED = (0x2E, 0x7D, 0x32), (0xAD, 0x14, 0x57)


def get_redis() -> Redis:
    return Redis(decode_responses=True)


class ProgressOnInstance(Workflow):
    """Wrong on purpose: progress kept on the instance is gone after a restart, so documents are pushed twice."""

    def __init__(self) -> None:
        super().__init__()
        self.done: list[int] = []

    @step
    async def convert(self, ev: StartEvent, ctx: Context, redis: Annotated[Redis, Resource(get_redis)]) -> StopEvent:
        for doc_id in ev.ids:
            if doc_id not in self.done:
                redis.rpush("converted", doc_id)
                self.done.append(doc_id)
                await ctx.checkpoint()
        return StopEvent(result=self.done)


@pytest.fixture(scope="module")
def exploration() -> ExplorationSummary:
    report = explore(ProgressOnInstance, {"ids": [1, 2]}, depth=2, seed=7, rerun="rerun --scenario='{id}'")
    assert report.failures and len(report.failures) < len(report.scenarios)
    return summary_of("tests/report::ProgressOnInstance", report)


@pytest.fixture(scope="module")
def page(exploration: ExplorationSummary, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("matrix") / "matrix.html"
    path.write_text(crash_matrix([exploration]), encoding="utf-8")
    return path


def test_every_scenario_has_one_cell_coloured_by_its_outcome(exploration: ExplorationSummary, page: Path) -> None:
    """Each scenario appears as exactly one cell whose title and colour give its outcome."""
    html = page.read_text()
    cells = re.findall(r'<td style="background:(#[0-9a-f]{6})" title="([^"]+)"', html)
    assert len(cells) == len(exploration["scenarios"])
    by_id = {title.rsplit(": ", 1)[0]: (colour, title.rsplit(": ", 1)[1]) for colour, title in cells}
    for scenario in exploration["scenarios"]:
        colour, shown = by_id[scenario["id"].replace(">", "&gt;")]
        assert shown == (scenario["kind"] or "passed")
        assert colour == ("#2e7d32" if scenario["kind"] is None else "#ad1457")


def test_failing_cells_link_to_their_diff_and_rerun_line(exploration: ExplorationSummary, page: Path) -> None:
    """A failing cell links to an anchor holding that scenario's diff and its re-run line;
    passing cells link nowhere."""
    html = page.read_text()
    links = re.findall(r'<a href="#([^"]+)"></a>', html)
    failures = [s for s in exploration["scenarios"] if s["kind"]]
    assert len(links) == len(failures)
    for anchor in links:
        block = re.search(rf'<div class="failure" id="{re.escape(anchor)}">(.*?)</div>', html, re.S)
        assert block is not None
        assert "duplicated effect" in block.group(1) and "rerun --scenario=" in block.group(1)
        assert "redis key &#x27;converted&#x27;" in block.group(1)  # the diff names what differs
        assert "reference run:" in block.group(1) and "resumed run:" in block.group(1)


def test_the_page_is_self_contained(page: Path) -> None:
    """The page needs nothing else: no scripts, no stylesheets or images from elsewhere."""
    html = page.read_text()
    assert "<script" not in html and "src=" not in html and "<link" not in html and "http" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (Debian: apt-get install chromium)")
def test_it_renders_in_headless_chromium(exploration: ExplorationSummary, page: Path, tmp_path: Path) -> None:
    """Headless Chromium parses the page into one cell per scenario and paints both outcome colours."""
    from PIL import Image

    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900",
    ]  # fmt: skip
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r"<td style=", dom.stdout)) == len(exploration["scenarios"])
    shot = tmp_path / "matrix.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=60, check=True
    )
    image = Image.open(shot).convert("RGB")
    colours = {image.getpixel((x, y)) for x in range(0, image.width, 2) for y in range(0, image.height, 2)}
    assert PASSED in colours and DUPLICATED in colours
