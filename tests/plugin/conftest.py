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
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A downstream project with ``flows.py`` and a ``pytest.ini``, for generated test files to run in."""
    return make_project(pytester)
