"""Hooks on a run's life, for plugins registered here or under the ``durableflow`` entry point.

The run loop calls hooks only while some plugin is registered, so an
unobserved run pays one attribute check per hook site.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import _crashpoints

if TYPE_CHECKING:
    from ._events import Event
    from ._workflow import Workflow

hookspec = pluggy.HookspecMarker("durableflow")
hookimpl = pluggy.HookimplMarker("durableflow")


class HookSpecs:
    """What a durableflow plugin may implement (decorate its functions with ``hookimpl``)."""

    @hookspec
    def durableflow_run_started(self, run_id: str, workflow: Workflow, resumed: bool) -> None:
        """A run started, or a stored run was resumed."""

    @hookspec
    def durableflow_run_finished(
        self, run_id: str, workflow: Workflow, status: str, result: Any, error: BaseException | None
    ) -> None:
        """A run ended: ``status`` is completed, failed or cancelled."""

    @hookspec
    def durableflow_step_started(self, run_id: str, step: str, event: Event, attempt: int) -> None:
        """A step is about to run on ``event``; ``attempt`` counts from 1."""

    @hookspec
    def durableflow_step_finished(
        self, run_id: str, step: str, event: Event, output: Event | None, error: Exception | None
    ) -> None:
        """A step returned ``output``, or raised ``error`` (retries may follow)."""

    @hookspec
    def durableflow_checkpoint_written(self, run_id: str, seq: int, full: bool) -> None:
        """Checkpoint ``seq`` is durable; ``full`` when it is a compaction snapshot."""

    @hookspec
    def durableflow_lease_ended(self, run_id: str, reason: str) -> None:
        """This process stopped driving a run that had not ended: ``reason`` is ``"lost"`` (another worker
        took the lease over), ``"expired"`` (no renewal succeeded before the lease would lapse: the store did
        not answer, or the process was paused) or ``"handed_back"`` (released as a worker shut down)."""

    @hookspec
    def durableflow_crash_point_reached(self, point: str) -> None:
        """A crash point was reached (``step.convert.end`` ...); raising here crashes the run."""


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, which also tells the run loop whether anyone is listening."""

    active: bool = False
    _entry_points_loaded: bool = False

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        self._refresh()
        return registered

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self._refresh()
        return removed

    def load_entry_points(self) -> None:
        """Load plugins of the ``durableflow`` entry-point group, once per process.

        Most installations have none: a glance at each distribution's ``entry_points.txt``
        (about 1 ms) decides whether pluggy's full scan (parsing every distribution's
        entry points, 10-15 ms) is needed at all.
        """
        if not self._entry_points_loaded:
            self._entry_points_loaded = True
            if _declares_plugins("durableflow"):
                self.load_setuptools_entrypoints("durableflow")

    def _refresh(self) -> None:
        self.active = bool(self.get_plugins())
        crash_hook = self.hook.durableflow_crash_point_reached
        _crashpoints.set_hook((lambda point: crash_hook(point=point)) if crash_hook.get_hookimpls() else None)


def _declares_plugins(group: str) -> bool:
    """Whether any installed distribution names entry points of ``group``."""
    section = f"[{group}]"
    for dist in importlib.metadata.distributions():
        text = dist.read_text("entry_points.txt")
        if text and section in text:
            return True
    return False


plugin_manager = PluginManager("durableflow")
plugin_manager.add_hookspecs(HookSpecs)
