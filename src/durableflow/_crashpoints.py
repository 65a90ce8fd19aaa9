"""Named places where a run may be made to crash; one global check unless something listens.

Points are named ``kind.name.phase``: ``step.convert.start``, ``checkpoint.write.after``,
``effect.charge.before``, ``user.<name>`` for :func:`crashpoint`. Listeners are the
crash harness (which may raise or kill the process there) and any plugin that
implements the ``durableflow_crash_point_reached`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str], None]

listener: Listener | None = None
"""Called with each point's name; ``None`` while nothing listens (the engine checks this)."""

_armed: Listener | None = None
_hook: Listener | None = None


def crashpoint(name: str) -> None:
    """Mark a place in your code where the crash harness may kill the run (``user.<name>``)."""
    if listener is not None:
        listener("user." + name)


@contextmanager
def armed(callback: Listener) -> Iterator[None]:
    """Send every point reached while the block runs to ``callback``, which may raise there."""
    global _armed
    previous, _armed = _armed, callback
    _refresh()
    try:
        yield
    finally:
        _armed = previous
        _refresh()


def set_hook(hook: Listener | None) -> None:
    """Called by the plugin manager when the crash point hook gains or loses its last implementation."""
    global _hook
    _hook = hook
    _refresh()


def _refresh() -> None:
    global listener
    armed_, hook = _armed, _hook
    if armed_ is not None and hook is not None:

        def both(point: str) -> None:
            hook(point)  # observers see the point before the harness acts on it
            armed_(point)

        listener = both
    else:
        listener = armed_ or hook
