"""Plugins of the ``durableflow`` entry-point group are found once per process, and only looked for in full
when some installed distribution declares them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from durableflow import plugin_manager
from durableflow._hooks import _declares_plugins


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A distribution on sys.path whose entry point in the durableflow group names a module with a hook."""
    (tmp_path / "seen_by_discovery.py").write_text(
        "import durableflow\n"
        "started = []\n"
        "@durableflow.hookimpl\n"
        "def durableflow_run_started(run_id, workflow, resumed):\n"
        "    started.append(run_id)\n"
    )
    info = tmp_path / "seen_by_discovery-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: seen-by-discovery\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[durableflow]\nseen = seen_by_discovery\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugin_manager, "_entry_points_loaded", False)
    yield "seen"
    plugin_manager.unregister(name="seen")
    sys.modules.pop("seen_by_discovery", None)


def test_a_declared_entry_point_is_loaded_and_registered(installed_plugin: str) -> None:
    """load_entry_points() registers the plugin a distribution declares under the durableflow group."""
    assert _declares_plugins("durableflow")
    plugin_manager.load_entry_points()
    assert plugin_manager.get_plugin(installed_plugin) is sys.modules["seen_by_discovery"]


def test_no_declared_entry_point_means_no_full_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a distribution declaring the group, pluggy's scan of every distribution is skipped."""
    monkeypatch.setattr(plugin_manager, "_entry_points_loaded", False)
    scanned: list[str] = []
    monkeypatch.setattr(plugin_manager, "load_setuptools_entrypoints", lambda group, name=None: scanned.append(group))
    assert not _declares_plugins("durableflow-no-such-group")
    if _declares_plugins("durableflow"):
        pytest.skip("a distribution in this environment declares durableflow plugins")
    plugin_manager.load_entry_points()
    assert scanned == []
