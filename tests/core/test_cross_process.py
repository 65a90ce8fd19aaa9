"""A run saved with ctx.to_dict() by one process is finished by another, with the uninterrupted result."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def drive(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run xprocess_flow.main(argv) in a fresh Python process."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import xprocess_flow; xprocess_flow.main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, check=False)


def outcome(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_saved_by_one_process_is_finished_by_another(tmp_path: Path) -> None:
    """Process A dies mid-step after writing to_dict(); process B restores it and finishes like an uninterrupted run."""
    snapshot = tmp_path / "run.json"

    saver = drive("save", str(snapshot))
    assert saver.returncode == 0, saver.stderr
    assert saver.stdout.split() == ["saved"]  # it died before any result was printed
    saved = json.loads(snapshot.read_text())
    assert saved["run_id"]

    resumed = outcome(drive("resume", str(snapshot)))
    uninterrupted = outcome(drive("run"))

    assert resumed["result"] == uninterrupted["result"]
    assert uninterrupted["result"]["sum"] == 55
    assert uninterrupted["squared"] == [1, 2, 3, 4, 5]
    # 1 and 2 were squared before the snapshot and are not redone; 3 was in flight and is delivered again
    assert resumed["squared"] == [3, 4, 5]
