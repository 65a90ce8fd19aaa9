"""Plugin overhead: what the auto-loaded pytest_durableflow plugin adds to a pytest run that does not use it.

Runs ``python -m pytest -q -p no:cacheprovider <temp dir with one trivial test>`` in subprocesses, alternating
runs with the plugin (loaded through its ``pytest11`` entry point, ``durableflow``) and without it
(``-p no:durableflow``), and prints the median wall time of each and the difference. Target (issue 4):
under 30 ms. The median CPU time (user + system) of each is printed too: on a busy machine it is the steadier
figure, and a wall-time difference smaller than the runs' spread is reported as inconclusive. It also prints
``python -X importtime`` figures for ``pytest_durableflow.plugin``: on its own, and with pytest already
imported (what a pytest run really pays).

    python tests/benchmarks/bench_plugin_overhead.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import print_table

TARGET_MS = 30.0
PLUGIN = "pytest_durableflow.plugin"


def pytest_command(test_dir: Path, with_plugin: bool) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_dir)]
    return command if with_plugin else [*command, "-p", "no:durableflow"]


def timed_run(command: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``command``, in seconds.

    CPU time is the steadier of the two on a machine others are using: waiting for a core is not counted.
    """
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def plugin_loaded(test_dir: Path, with_plugin: bool) -> bool:
    """Whether pytest registered the plugin module in that configuration (read from --trace-config)."""
    done = subprocess.run([*pytest_command(test_dir, with_plugin), "--trace-config"], capture_output=True, text=True)
    return PLUGIN in done.stdout


def time_in_plugin(test_dir: Path, profile: Path) -> float:
    """Seconds one pytest run spends in pytest_durableflow's code (its hooks, its modules' bodies), under cProfile.

    Unlike the wall-time difference this does not drown in the noise of a busy machine. It leaves out the
    loading of the modules themselves, which ``import_times`` measures.
    """
    command = pytest_command(test_dir, True)
    subprocess.run([command[0], "-m", "cProfile", "-o", str(profile), *command[1:]], capture_output=True, check=True)
    functions = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    ours = {key for key in functions if "pytest_durableflow" in key[0]}
    # count each call chain once: from where pytest (or an import) first enters the plugin's code
    return sum(functions[key][3] for key in ours if not any(caller in ours for caller in functions[key][4]))


def import_times(code: str, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """``python -X importtime -c code``: median cumulative and self µs per module imported, over ``repeats``."""
    cumulative: dict[str, list[float]] = {}
    own: dict[str, list[float]] = {}
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"python -c {code!r} failed:\n{done.stderr}")
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "imported package" in line:
                continue
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
            cumulative.setdefault(name.strip(), []).append(float(cumulative_us))
            own.setdefault(name.strip(), []).append(float(self_us))
    return (
        {name: statistics.median(v) for name, v in cumulative.items()},
        {name: statistics.median(v) for name, v in own.items()},
    )


def _iqr(values: list[float]) -> float:
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="pytest runs of each kind, alternating (default 15, quick 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 rounds")
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.quick else 15)

    entry_points = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "durableflow"]
    if not entry_points:
        print("The durableflow pytest11 entry point is not installed; install the project: pip install -e .")
        raise SystemExit(2)
    print(f"pytest11 entry point: durableflow = {entry_points[0].value}; Python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory(prefix="durableflow-plugin-bench-") as tmp:
        test_dir = Path(tmp)
        (test_dir / "pytest.ini").write_text("[pytest]\n")  # this dir is the rootdir: no outside config applies
        (test_dir / "test_trivial.py").write_text("def test_trivial():\n    assert True\n")
        if not plugin_loaded(test_dir, True) or plugin_loaded(test_dir, False):
            print(f"warning: --trace-config does not show {PLUGIN} loaded with the plugin and absent without it")
        wall: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for with_plugin in (True, False):  # warm-up: bytecode caches
            timed_run(pytest_command(test_dir, with_plugin))
        for round_ in range(args.rounds):
            for with_plugin in (True, False) if round_ % 2 == 0 else (False, True):
                wall_s, cpu_s = timed_run(pytest_command(test_dir, with_plugin))
                wall[with_plugin].append(wall_s * 1000)
                cpu[with_plugin].append(cpu_s * 1000)
        in_plugin_ms = time_in_plugin(test_dir, test_dir / "run.prof") * 1000

    print_table(
        f"pytest run of one trivial test, {args.rounds} alternating runs each (ms)",
        ["run", "wall median", "wall min", "wall IQR", "CPU median"],
        [
            [label, f"{statistics.median(wall[key]):.1f}", f"{min(wall[key]):.1f}", f"{_iqr(wall[key]):.1f}",
             f"{statistics.median(cpu[key]):.1f}"]
            for label, key in (("with the plugin", True), ("-p no:durableflow", False))
        ],
    )  # fmt: skip

    alone, _ = import_times(f"import {PLUGIN}", 5)
    cumulative, own = import_times(f"import pytest; import {PLUGIN}", 5)
    plugin_alone = sum(us for name, us in alone.items() if name in ("pytest_durableflow", PLUGIN))
    plugin_marginal = sum(us for name, us in cumulative.items() if name in ("pytest_durableflow", PLUGIN))
    # what the plugin pulls in that pytest had not: every module imported after pytest's own tree
    after_pytest = list(own)[list(own).index("pytest") + 1 :] if "pytest" in own else list(own)
    heaviest = sorted(after_pytest, key=lambda name: own[name], reverse=True)[:5]
    print_table(
        "python -X importtime (median of 5; pytest_durableflow package + plugin module, cumulative)",
        ["import", "ms"],
        [
            [f"import {PLUGIN}", f"{plugin_alone / 1000:.1f}"],
            [f"import {PLUGIN}, pytest already imported", f"{plugin_marginal / 1000:.1f}"],
            *([f"  self time of {name}", f"{own[name] / 1000:.2f}"] for name in heaviest),
        ],
    )

    print()
    for what, times in (("wall", wall), ("CPU time (user + system)", cpu)):
        difference = statistics.median(times[True]) - statistics.median(times[False])
        noise = max(_iqr(times[True]), _iqr(times[False]))
        if noise > TARGET_MS:  # a difference of medians smaller than their spread says nothing either way
            verdict = f"inconclusive: the runs' IQR is {noise:.0f} ms, more than the target; rerun on an idle machine"
        else:
            verdict = ("meets" if difference < TARGET_MS else "MISSES") + " the target"
        print(f"plugin overhead, {what}: {difference:+.1f} ms (target < {TARGET_MS:.0f} ms): {verdict}")
    estimate = in_plugin_ms + plugin_marginal / 1000
    verdict = "meets" if estimate < TARGET_MS else "MISSES"
    print(
        f"plugin overhead, in-process estimate: {estimate:.1f} ms = {in_plugin_ms:.1f} ms in its code (cProfile)"
        f" + {plugin_marginal / 1000:.1f} ms importing it after pytest: {verdict} the target"
    )
    print(f"importing {PLUGIN}: {plugin_alone / 1000:.1f} ms alone, {plugin_marginal / 1000:.1f} ms after pytest")


if __name__ == "__main__":
    main()
