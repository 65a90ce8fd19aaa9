"""``FrozenClock``: freezegun-backed time for durableflow, where a sleep jumps straight to its deadline.

An hour-long ``ctx.sleep`` then takes milliseconds, retry delays cost
nothing, and a timeout fires when the frozen time passes its deadline —
whether a sleep jumped there or the test moved the clock.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from durableflow import get_clock, use_clock
from durableflow._errors import install_hint

REAL = {"monotonic": time.monotonic}
"""The real monotonic clock, kept out of freezegun's reach: it patches module attributes, not dict values.
The harness times scenarios and bounds hangs with it while a test freezes time."""


def real_monotonic() -> float:
    return REAL["monotonic"]()


class FrozenClock:
    """A ``durableflow.Clock`` over a started freezegun freezer (``freeze_time(...).start()``)."""

    def __init__(self, freezer: Any) -> None:
        self._freezer = freezer
        self._timers: list[tuple[float, asyncio.AbstractEventLoop, Callable[[], None], list[bool]]] = []
        self._instant: tuple[Any, float] | None = None
        """The frozen datetime last read and its timestamp: what ``now`` returns until the time moves."""

    def now(self) -> float:
        """The frozen instant as epoch seconds, as freezegun's ``time.time()`` gives it (without its look
        up the call stack for modules it ignores, which costs more than the rest of a checkpoint)."""
        frozen = getattr(self._freezer, "time_to_freeze", None)
        if frozen is None or type(self._freezer).__name__ != "FrozenDateTimeFactory":
            return time.time()  # a ticking clock: freezegun's own arithmetic
        if self._instant is None or self._instant[0] is not frozen:
            self._instant = (frozen, calendar.timegm(frozen.timetuple()) + frozen.microsecond / 1_000_000)
        return self._instant[1]

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timeout whose deadline it passes."""
        self.move_to(self.now() + seconds)

    def move_to(self, timestamp: float) -> None:
        """Move time to ``timestamp`` (never backwards), firing due timeouts."""
        if timestamp > self.now():
            micros = math.ceil(timestamp * 1_000_000)  # round up, so the deadline counts as reached
            self._freezer.move_to(datetime.datetime.fromtimestamp(micros / 1_000_000, datetime.UTC))
        self._fire_due()

    def advance_here(self, seconds: float) -> None:
        """Move time on, running the timeouts it passes that belong to this thread's running loop right
        here (a lease renewal), and handing the others to their loops: for code that holds its loop."""
        timestamp = self.now() + seconds
        micros = math.ceil(timestamp * 1_000_000)
        self._freezer.move_to(datetime.datetime.fromtimestamp(micros / 1_000_000, datetime.UTC))
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        now = self.now()
        due = [timer for timer in self._timers if timer[0] <= now]
        self._timers = [timer for timer in self._timers if timer[0] > now]
        for _, loop, callback, cancelled in due:
            if loop is here:
                _call_unless_cancelled(callback, cancelled)
            elif not cancelled[0] and not loop.is_closed():
                loop.call_soon_threadsafe(_call_unless_cancelled, callback, cancelled)

    def restart_at(self, timestamp: float) -> None:
        """Set time to ``timestamp``, backwards too, forgetting every timeout: each crash scenario
        starts at the same instant, so timestamps a run stores compare equal across scenarios."""
        self._timers.clear()
        self._freezer.move_to(datetime.datetime.fromtimestamp(timestamp, datetime.UTC))

    async def sleep_until(self, deadline: float) -> None:
        self.move_to(deadline)
        await asyncio.sleep(0)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        cancelled = [False]
        timer = (deadline, asyncio.get_running_loop(), callback, cancelled)
        self._timers.append(timer)
        self._fire_due()
        return lambda: _cancel(self._timers, timer)

    def _fire_due(self) -> None:
        now = self.now()
        due = [timer for timer in self._timers if timer[0] <= now]
        if not due:
            return
        self._timers = [timer for timer in self._timers if timer[0] > now]
        for _, loop, callback, cancelled in due:
            if not cancelled[0] and not loop.is_closed():
                loop.call_soon_threadsafe(_call_unless_cancelled, callback, cancelled)


Timer = tuple[float, asyncio.AbstractEventLoop, Callable[[], None], list[bool]]


def _cancel(timers: list[Timer], timer: Timer) -> None:
    """Cancel ``timer``: marked, for a call already handed to its loop, and dropped from ``timers`` (found by
    identity), which a run that arms and cancels a timeout at every step would otherwise grow without end."""
    timer[3][0] = True
    for index, pending in enumerate(timers):
        if pending is timer:
            del timers[index]
            return


def _call_unless_cancelled(callback: Callable[[], None], cancelled: list[bool]) -> None:
    if not cancelled[0]:  # read when the loop runs it: a cancel in between still counts
        callback()


class ManualClock:
    """A ``durableflow.Clock`` that stands still until ``advance``: sleeps wake, and timeouts fire,
    only when the test moves time past them. For tests that step through time exactly."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.time = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._timers: list[tuple[float, asyncio.AbstractEventLoop, Callable[[], None], list[bool]]] = []

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.time:
            await asyncio.sleep(0)
            return
        entry = (deadline, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Callable[[], None]:
        cancelled = [False]
        timer = (deadline, asyncio.get_running_loop(), callback, cancelled)
        self._timers.append(timer)
        self._fire()
        return lambda: _cancel(self._timers, timer)

    @property
    def sleeping(self) -> int:
        """How many sleeps wait for the clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time on, waking the sleeps and firing the timeouts it passes."""
        self.time += seconds
        self._fire()

    def _fire(self) -> None:
        for deadline, waiter in list(self._sleepers):
            if deadline <= self.time and not waiter.done():
                waiter.set_result(None)
        due = [timer for timer in self._timers if timer[0] <= self.time]
        self._timers = [timer for timer in self._timers if timer[0] > self.time]
        for _, loop, callback, cancelled in due:
            loop.call_soon(_call_unless_cancelled, callback, cancelled)


@contextmanager
def exploration_clock() -> Iterator[tuple[FrozenClock | None, str | None]]:
    """The clock an exploration moves across crashes: the test's frozen clock, or one frozen here.

    Frozen time makes sleeps free and lets a crash cost downtime: each resume
    starts later than the crash by ``downtime`` seconds. A clock of the test's
    own (a ``ManualClock``, say) is left alone; the second value then says why
    downtime is not simulated.
    """
    from durableflow._clock import SystemClock

    clock = get_clock()
    if isinstance(clock, FrozenClock):
        yield clock, None
        return
    if not isinstance(clock, SystemClock):
        yield None, f"the clock in force is a {type(clock).__name__}: crashes cost no downtime"
        return
    try:
        import freezegun  # noqa: F401 - frozen_time's, checked here to say what to install
    except ImportError:
        yield None, f"freezegun is not installed ({install_hint('pytest')}): crashes cost no downtime"
        return
    start = datetime.datetime.fromtimestamp(math.floor(time.time()), datetime.UTC)
    # pytest times tests through _pytest.timing: frozen, it would report the frozen hours as durations
    with frozen_time(start, ignore=["_pytest.timing"]) as factory:
        frozen = FrozenClock(factory)
        with use_clock(frozen):
            yield frozen, None


@contextmanager
def frozen_time(start: Any, ignore: list[str]) -> Iterator[Any]:
    """``freezegun.freeze_time(start, real_asyncio=True, ignore=ignore)``, started; yields its time factory.

    Freezing patches every module that imported a time function by name (``from time import time``).
    freezegun finds them by listing every module's attributes, each time it starts: some 3 ms with a
    test suite's modules loaded, more than a short exploration's own work. Here the modules are listed
    once and remembered by their size; freezegun is started with that scan turned off (an outer freezer
    that ignores every module) and a second freezer inside it, whose ignore list decides, call by call,
    who sees the real time, as one freezer's would. A name that a module rebinds to a time function, its
    number of names unchanged, is missed: it keeps the real function (README, Testing with the plugin)."""
    import freezegun
    from freezegun import api

    if api.freeze_factories or not hasattr(api, "FakeDatetime"):  # nested (nothing more to patch), or unknown
        freezer = freezegun.freeze_time(start, real_asyncio=True, ignore=ignore)
        factory = freezer.start()
        try:
            yield factory
        finally:
            freezer.stop()
        return
    outer = freezegun.freeze_time(start, real_asyncio=True, ignore=[""])
    inner = freezegun.freeze_time(start, real_asyncio=True, ignore=ignore)
    outer.start()
    undo: list[tuple[Any, str, Any]] = []
    try:
        factory = inner.start()
        try:
            fakes = {id(outer.reals[id(fake)]): fake for fake in (getattr(api, name) for name in outer.fake_names)}
            _patch_modules(fakes, inner.ignore, undo)
            yield factory
        finally:
            for module, name, real in reversed(undo):
                setattr(module, name, real)
            inner.stop()
    finally:
        outer.stop()


_HOLDERS: dict[str, tuple[int, int, tuple[tuple[str, Any], ...]]] = {}
"""Each module looked through: its id and number of attributes then, and the real time functions it held."""


class _Scan(NamedTuple):
    """The last look through every module, for one ignore list: what it saw, and what it found to patch."""

    modules: list[tuple[str, Any]]
    """Every entry of ``sys.modules`` then: held, so that the ids below stay theirs."""
    seen: tuple[list[str], list[int]]
    """Their names and ids: compared as they are, never the entries themselves (any object may be one)."""
    namespaces: list[dict[str, Any]]
    sizes: list[int]
    holders: list[tuple[Any, str, Any]]
    """Each (module, attribute, real time function) to patch."""


_SCANS: dict[tuple[str, ...], _Scan] = {}


def _patch_modules(fakes: dict[int, Any], ignore: tuple[str, ...], undo: list[tuple[Any, str, Any]]) -> None:
    """Point every module's names for a real time function at freezegun's fake, as freezegun's scan would
    (same modules skipped), recording each change in ``undo``.

    When no module came or went, none gained or lost a name, and every name patched last time still holds
    its real function, the modules are not looked through again: some 1 ms with a test suite's modules."""
    import sys

    modules = list(sys.modules.items())
    seen = ([name for name, _ in modules], [id(module) for _, module in modules])
    scan = _SCANS.get(ignore)
    if (
        scan is None
        or scan.seen != seen
        or [len(namespace) for namespace in scan.namespaces] != scan.sizes
        or any(vars(module).get(attribute) is not real for module, attribute, real in scan.holders)
    ):
        scan = _SCANS[ignore] = _scan(modules, seen, fakes, ignore)
    for module, attribute, real in scan.holders:
        setattr(module, attribute, fakes[id(real)])
        undo.append((module, attribute, real))


def _scan(
    modules: list[tuple[str, Any]], seen: tuple[list[str], list[int]], fakes: dict[int, Any], ignore: tuple[str, ...]
) -> _Scan:
    """Look through every module (each one unchanged since its last look by its id, size and held names)."""
    namespaces: list[dict[str, Any]] = []
    holders: list[tuple[Any, str, Any]] = []
    for name, module in modules:
        if module is None or name.startswith(ignore) or name.endswith(".six.moves") or name == "freezegun.api":
            continue
        if getattr(module, "__name__", None) in (None, "datetime", "time"):
            continue
        try:
            attributes = vars(module)
        except TypeError:
            continue
        namespaces.append(attributes)
        known = _HOLDERS.get(name)
        if (
            known is None
            or known[:2] != (id(module), len(attributes))
            or any(attributes.get(attribute) is not real for attribute, real in known[2])
        ):
            held = tuple((attribute, value) for attribute, value in list(attributes.items()) if id(value) in fakes)
            known = _HOLDERS[name] = (id(module), len(attributes), held)
        holders.extend((module, attribute, real) for attribute, real in known[2])
    return _Scan(modules, seen, namespaces, [len(namespace) for namespace in namespaces], holders)
