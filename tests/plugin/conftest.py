"""Fixtures for the plugin's own tests: a downstream project that ``pytester`` runs.

``pytester`` is registered here rather than with ``pytest_plugins``, which pytest
refuses in a conftest below the rootdir when the whole suite runs.
"""

from __future__ import annotations

import pytest

from .downstream import make_project


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A downstream project with ``flows.py`` and a ``pytest.ini``, for generated test files to run in.

    Its runs see ``CI`` set, as they do in CI, where pytest prints more: each
    failure's whole message again in the short test summary. Set everywhere,
    what the tests read of the output cannot differ between a laptop and CI.
    """
    monkeypatch.setenv("CI", "true")
    # A pytest run in a subprocess must not load mirakuru (through pytest-redis and pytest-postgresql): at
    # its exit mirakuru kills every server whose mark contains that process's pid (see tests/conftest.py).
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:pytest_redis -p no:pytest_postgresql")
    return make_project(pytester)
