"""Worker processes for the tests that need a real second process: each runs ``workflows.main``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from . import workflows

_ROOT = Path(workflows.__file__).parents[len(workflows.__name__.split(".")) - 1]
_CODE = f"import sys; sys.path.insert(0, {str(_ROOT)!r}); from {workflows.__name__} import main; main()"


def start_worker(command: str, **options: object) -> subprocess.Popen[bytes]:
    """Start ``workflows.main`` in a new Python process, e.g. ``start_worker("start", store=url, run_id="r")``."""
    argv = [command]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.Popen([sys.executable, "-c", _CODE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """Wait for ``process``; its return code (negative: killed by that signal). Fails rather than hangs."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"worker {process.args[-1]} did not finish within {timeout}s") from None
    if process.returncode > 0:
        raise AssertionError(f"worker failed with code {process.returncode}:\n{stderr.decode()}")
    return process.returncode


def wait_for_files(*paths: Path, timeout: float = 30.0) -> None:
    """Wait until every path exists."""
    give_up = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        if time.monotonic() > give_up:
            raise AssertionError(f"not all of {[str(p) for p in paths]} appeared within {timeout}s")
        time.sleep(0.005)


def wait_for_any(*paths: Path, timeout: float = 30.0) -> bool:
    """Wait until one of the paths exists; False if none did within ``timeout``."""
    give_up = time.monotonic() + timeout
    while not any(path.exists() for path in paths):
        if time.monotonic() > give_up:
            return False
        time.sleep(0.005)
    return True
