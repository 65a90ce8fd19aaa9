"""Freezing time reaches the modules that hold a time function by name, looking through them only when one
came, went or changed since the last freeze."""

from __future__ import annotations

import datetime
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from durableflow.testing import _clock

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    made = types.ModuleType("durableflow_test_holder")
    sys.modules[made.__name__] = made
    try:
        yield made
    finally:
        del sys.modules[made.__name__]


def frozen_now(module: types.ModuleType) -> float:
    with _clock.frozen_time(START, ignore=[]):
        return float(module.now())


def test_a_module_that_takes_a_time_function_between_two_freezes_reads_the_frozen_one(
    module: types.ModuleType,
) -> None:
    """A name for ``time.time`` that appeared since the last freeze is patched by the next, and put back."""
    module.earlier = lambda: 0.0
    with _clock.frozen_time(START, ignore=[]):
        assert module.earlier() == 0.0
    module.now = time.time  # as ``from time import time`` after the first freeze
    assert frozen_now(module) == START.timestamp()
    assert module.now is time.time
    assert frozen_now(module) == START.timestamp()  # and again, from what the last look found


def test_a_module_imported_between_two_freezes_is_looked_through(module: types.ModuleType) -> None:
    """A module that came since the last freeze is looked through, every other one unchanged."""
    module.now = lambda: 0.0
    assert frozen_now(module) == 0.0
    late = types.ModuleType("durableflow_test_late")
    late.now = time.time
    sys.modules[late.__name__] = late
    try:
        assert frozen_now(late) == START.timestamp()
    finally:
        del sys.modules[late.__name__]
    assert late.now is time.time


class _Counting(dict[str, Any]):
    looked = 0

    def get(self, key: str, default: Any = None) -> Any:
        type(self).looked += 1
        return super().get(key, default)


def test_a_second_freeze_with_no_module_changed_looks_through_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """When no module came, went or changed, the modules are not looked through again."""
    monkeypatch.setattr(_clock, "_HOLDERS", _Counting(_clock._HOLDERS))
    with _clock.frozen_time(START, ignore=[]):
        pass
    with _clock.frozen_time(START, ignore=[]):
        _Counting.looked = 0
    with _clock.frozen_time(START, ignore=[]):
        pass
    assert _Counting.looked == 0


class _Incomparable:
    """An entry of ``sys.modules`` that is no module and refuses to be compared (a lazy loader's proxy, say)."""

    def __eq__(self, other: object) -> bool:
        raise TypeError("not comparable")

    __hash__ = object.__hash__


def test_an_entry_of_sys_modules_that_refuses_comparison_is_no_obstacle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries are told apart by name and identity, never compared: any object may sit in ``sys.modules``."""
    monkeypatch.setitem(sys.modules, "durableflow_test_proxy", _Incomparable())
    with _clock.frozen_time(START, ignore=[]):
        pass
    monkeypatch.setitem(sys.modules, "durableflow_test_proxy", _Incomparable())
    with _clock.frozen_time(START, ignore=[]):
        assert time.time() == START.timestamp()
