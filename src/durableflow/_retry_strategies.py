"""The pieces of ``retry_policy``: tenacity's own strategies, callable the way llama-index-workflows calls them.

Each class here *is* the tenacity class of the same name (same constructor,
usable in ``tenacity.Retrying``), and also answers the simpler calls a retry
policy makes: a wait strategy takes the retry number from 0 (``wait(n, seed=)``),
a stop condition the attempts so far and the seconds spent
(``stop(attempts, elapsed, upcoming_sleep=)``), a retry condition the exception.
``|``, ``&`` and ``+`` combine them into the combinators below. Random waits
draw from ``random.Random(seed)`` when a seed is given, so a replayed retry
waits as long as the first time.
"""

from __future__ import annotations

import random
import re
from typing import Any, Protocol

from tenacity.retry import (
    retry_all as _t_retry_all,
)
from tenacity.retry import (
    retry_any as _t_retry_any,
)
from tenacity.retry import (
    retry_base as _t_retry_base,
)
from tenacity.retry import (
    retry_if_exception as _t_retry_if_exception,
)
from tenacity.retry import (
    retry_if_exception_cause_type as _t_retry_if_exception_cause_type,
)
from tenacity.retry import (
    retry_if_exception_message as _t_retry_if_exception_message,
)
from tenacity.retry import (
    retry_if_exception_type as _t_retry_if_exception_type,
)
from tenacity.retry import (
    retry_if_not_exception_message as _t_retry_if_not_exception_message,
)
from tenacity.retry import (
    retry_if_not_exception_type as _t_retry_if_not_exception_type,
)
from tenacity.retry import (
    retry_unless_exception_type as _t_retry_unless_exception_type,
)
from tenacity.stop import (
    stop_after_attempt as _t_stop_after_attempt,
)
from tenacity.stop import (
    stop_after_delay as _t_stop_after_delay,
)
from tenacity.stop import (
    stop_all as _t_stop_all,
)
from tenacity.stop import (
    stop_any as _t_stop_any,
)
from tenacity.stop import (
    stop_base as _t_stop_base,
)
from tenacity.stop import (
    stop_before_delay as _t_stop_before_delay,
)
from tenacity.wait import (
    wait_base as _t_wait_base,
)
from tenacity.wait import (
    wait_chain as _t_wait_chain,
)
from tenacity.wait import (
    wait_combine as _t_wait_combine,
)
from tenacity.wait import (
    wait_exponential as _t_wait_exponential,
)
from tenacity.wait import (
    wait_exponential_jitter as _t_wait_exponential_jitter,
)
from tenacity.wait import (
    wait_fixed as _t_wait_fixed,
)
from tenacity.wait import (
    wait_incrementing as _t_wait_incrementing,
)
from tenacity.wait import (
    wait_none as _t_wait_none,
)
from tenacity.wait import (
    wait_random as _t_wait_random,
)
from tenacity.wait import (
    wait_random_exponential as _t_wait_random_exponential,
)

__all__ = [
    "RetryCondition",
    "StopCondition",
    "WaitStrategy",
    "is_native",
    "retry_all",
    "retry_always",
    "retry_any",
    "retry_if_exception",
    "retry_if_exception_cause_type",
    "retry_if_exception_message",
    "retry_if_exception_type",
    "retry_if_not_exception_message",
    "retry_if_not_exception_type",
    "retry_never",
    "retry_unless_exception_type",
    "stop_after_attempt",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_before_delay",
    "stop_never",
    "wait_chain",
    "wait_combine",
    "wait_exponential",
    "wait_exponential_jitter",
    "wait_fixed",
    "wait_full_jitter",
    "wait_incrementing",
    "wait_none",
    "wait_random",
    "wait_random_exponential",
]


class RetryCondition(Protocol):
    """Whether an exception is worth another attempt."""

    def __call__(self, error: BaseException) -> bool: ...


class WaitStrategy(Protocol):
    """Seconds to wait before retry number ``attempts`` (0 for the first retry)."""

    def __call__(self, attempts: int, *, seed: int | None = None) -> float: ...


class StopCondition(Protocol):
    """Whether to give up after ``attempts`` failures, ``elapsed_time`` seconds and the next sleep."""

    def __call__(self, attempts: int, elapsed_time: float, *, upcoming_sleep: float = 0.0) -> bool: ...


def _members(strategies: object) -> Any:
    """A combinator's pieces, typed as tenacity's but answering the plain calls (or foreign, and failing)."""
    return strategies


def _rng(seed: int | None) -> Any:
    return random.Random(seed) if seed is not None else random


# -- retry conditions ---------------------------------------------------------------------------


class _Retry(_t_retry_base):
    """A tenacity retry strategy that also answers ``condition(exception)``."""

    def __call__(self, retry_state: Any) -> bool:
        if isinstance(retry_state, BaseException):
            return self.matches(retry_state)
        return bool(super().__call__(retry_state))  # type: ignore[safe-super]

    def matches(self, error: BaseException) -> bool:
        raise NotImplementedError

    def __and__(self, other: Any) -> retry_all:
        return retry_all(self, other)

    def __rand__(self, other: Any) -> retry_all:
        return retry_all(other, self)

    def __or__(self, other: Any) -> retry_any:
        return retry_any(self, other)

    def __ror__(self, other: Any) -> retry_any:
        return retry_any(other, self)


class retry_if_exception(_Retry, _t_retry_if_exception):
    """Retry when ``predicate(exception)`` is true."""

    def matches(self, error: BaseException) -> bool:
        return bool(self.predicate(error))


class retry_if_exception_type(_Retry, _t_retry_if_exception_type):
    """Retry when the exception is one of ``exception_types``."""

    def matches(self, error: BaseException) -> bool:
        return isinstance(error, self.exception_types)


class retry_if_not_exception_type(_Retry, _t_retry_if_not_exception_type):
    """Retry unless the exception is one of ``exception_types``."""

    def matches(self, error: BaseException) -> bool:
        return not isinstance(error, self.exception_types)


class retry_unless_exception_type(_Retry, _t_retry_unless_exception_type):
    """Retry unless the exception is one of ``exception_types``."""

    def matches(self, error: BaseException) -> bool:
        return not isinstance(error, self.exception_types)


class retry_if_exception_message(_Retry, _t_retry_if_exception_message):
    """Retry when ``str(exception)`` equals ``message``, or ``match`` (a regular expression) is found in it."""

    _message: str | None
    _pattern: re.Pattern[str] | None

    # tenacity's own __init__ checks the arguments (and keeps the constructor's signature theirs);
    # __new__ notes them for the plain-exception call, whatever tenacity's version stores.
    def __new__(cls, message: str | None = None, match: Any = None) -> retry_if_exception_message:
        self = super().__new__(cls)
        self._message = message
        self._pattern = re.compile(match) if match is not None else None
        return self

    def matches(self, error: BaseException) -> bool:
        if self._message is not None:
            return str(error) == self._message
        return self._pattern is not None and self._pattern.search(str(error)) is not None


class retry_if_not_exception_message(retry_if_exception_message, _t_retry_if_not_exception_message):
    """Retry unless ``str(exception)`` equals ``message`` or ``match`` is found in it."""

    def matches(self, error: BaseException) -> bool:
        return not super().matches(error)


class retry_if_exception_cause_type(_Retry, _t_retry_if_exception_cause_type):
    """Retry when an exception in the ``raise ... from`` chain is one of ``exception_types``."""

    def matches(self, error: BaseException) -> bool:
        cause = error.__cause__
        while cause is not None:
            if isinstance(cause, self.exception_cause_types):
                return True
            cause = cause.__cause__
        return False


class retry_any(_Retry, _t_retry_any):
    """Retry when any of the conditions does (``a | b``)."""

    def matches(self, error: BaseException) -> bool:
        return any(condition(error) for condition in _members(self.retries))


class retry_all(_Retry, _t_retry_all):
    """Retry when all of the conditions do (``a & b``)."""

    def matches(self, error: BaseException) -> bool:
        return all(condition(error) for condition in _members(self.retries))


class retry_always(_Retry):
    """Retry whatever the step raised."""

    def matches(self, error: BaseException) -> bool:
        return True

    def __call__(self, retry_state: Any) -> bool:
        return True


class retry_never(_Retry):
    """Never retry."""

    def matches(self, error: BaseException) -> bool:
        return False

    def __call__(self, retry_state: Any) -> bool:
        return False


# -- wait strategies ----------------------------------------------------------------------------


class _Wait(_t_wait_base):
    """A tenacity wait strategy that also answers ``wait(retry_number, seed=...)``."""

    def __call__(self, retry_state: Any, *, seed: int | None = None) -> float:
        if isinstance(retry_state, int):
            return self.seconds(retry_state, seed)
        return float(super().__call__(retry_state))  # type: ignore[safe-super]

    def seconds(self, n: int, seed: int | None) -> float:
        raise NotImplementedError

    def __add__(self, other: Any) -> wait_combine:
        return wait_combine(self, other)

    def __radd__(self, other: Any) -> Any:
        return self if other == 0 else wait_combine(other, self)


class wait_fixed(_Wait, _t_wait_fixed):
    """The same delay before every retry."""

    def seconds(self, n: int, seed: int | None) -> float:
        return float(self.wait_fixed)


class wait_none(_Wait, _t_wait_none):
    """No delay."""

    def seconds(self, n: int, seed: int | None) -> float:
        return 0.0


class wait_random(_Wait, _t_wait_random):
    """A delay drawn uniformly from ``[min, max]``."""

    def seconds(self, n: int, seed: int | None) -> float:
        return float(_rng(seed).uniform(self.wait_random_min, self.wait_random_max))


class wait_incrementing(_Wait, _t_wait_incrementing):
    """``start + increment * n``, between 0 and ``max``."""

    def seconds(self, n: int, seed: int | None) -> float:
        return float(max(0.0, min(self.start + self.increment * n, self.max)))


def _exponential(scale: float, base: float, n: int, floor: float, ceiling: float) -> float:
    try:
        grown = scale * base**n
    except OverflowError:
        grown = ceiling
    return float(max(max(0.0, floor), min(grown, ceiling)))


class wait_exponential(_Wait, _t_wait_exponential):
    """``multiplier * exp_base**n``, between ``min`` and ``max``."""

    def seconds(self, n: int, seed: int | None) -> float:
        return _exponential(self.multiplier, self.exp_base, n, self.min, self.max)


class wait_random_exponential(_Wait, _t_wait_random_exponential):
    """Full jitter: drawn uniformly from ``[min, multiplier * exp_base**n]`` (capped at ``max``)."""

    def seconds(self, n: int, seed: int | None) -> float:
        ceiling = _exponential(self.multiplier, self.exp_base, n, self.min, self.max)
        return float(_rng(seed).uniform(self.min, ceiling))


wait_full_jitter = wait_random_exponential


class wait_exponential_jitter(_Wait, _t_wait_exponential_jitter):
    """``initial * exp_base**n`` plus a draw from ``[0, jitter]``, never above ``max``."""

    def seconds(self, n: int, seed: int | None) -> float:
        scale = getattr(self, "initial", None)  # tenacity 9.2 renamed it ``multiplier``
        base = _exponential(scale if scale is not None else self.multiplier, self.exp_base, n, 0.0, self.max)
        return float(min(base + _rng(seed).uniform(0, self.jitter), self.max))


class wait_chain(_Wait, _t_wait_chain):
    """The first strategy before the first retry, the second before the second, ... then the last one."""

    def __new__(cls, *strategies: Any) -> wait_chain:
        if not strategies:
            raise ValueError("wait_chain needs at least one strategy")
        return super().__new__(cls)

    def seconds(self, n: int, seed: int | None) -> float:
        return float(_members(self.strategies)[min(n, len(self.strategies) - 1)](n, seed=seed))


class wait_combine(_Wait, _t_wait_combine):
    """The sum of the strategies' delays (``a + b``)."""

    def seconds(self, n: int, seed: int | None) -> float:
        return float(sum(strategy(n, seed=seed) for strategy in _members(self.wait_funcs)))


# -- stop conditions ----------------------------------------------------------------------------


class _Stop(_t_stop_base):
    """A tenacity stop strategy that also answers ``stop(attempts, elapsed_time, upcoming_sleep=...)``."""

    def __call__(self, retry_state: Any, elapsed_time: float | None = None, *, upcoming_sleep: float = 0.0) -> bool:
        if isinstance(retry_state, int):
            return self.reached(retry_state, elapsed_time or 0.0, upcoming_sleep)
        return bool(super().__call__(retry_state))  # type: ignore[safe-super]

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        raise NotImplementedError

    def __and__(self, other: Any) -> stop_all:
        return stop_all(self, other)

    def __rand__(self, other: Any) -> stop_all:
        return stop_all(other, self)

    def __or__(self, other: Any) -> stop_any:
        return stop_any(self, other)

    def __ror__(self, other: Any) -> stop_any:
        return stop_any(other, self)


class stop_after_attempt(_Stop, _t_stop_after_attempt):
    """Give up once ``max_attempt_number`` attempts have failed."""

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        return attempts >= self.max_attempt_number


class stop_after_delay(_Stop, _t_stop_after_delay):
    """Give up once ``max_delay`` seconds have passed since the first failure."""

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        return elapsed >= self.max_delay


class stop_before_delay(_Stop, _t_stop_before_delay):
    """Give up when the next wait would end past ``max_delay`` seconds."""

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        return elapsed + upcoming_sleep >= self.max_delay


class stop_any(_Stop, _t_stop_any):
    """Give up when any condition says so (``a | b``)."""

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        return any(stop(attempts, elapsed, upcoming_sleep=upcoming_sleep) for stop in _members(self.stops))


class stop_all(_Stop, _t_stop_all):
    """Give up when every condition says so (``a & b``)."""

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        return all(stop(attempts, elapsed, upcoming_sleep=upcoming_sleep) for stop in _members(self.stops))


class stop_never(_Stop):
    """Never give up (the run's timeout is then the bound)."""

    def reached(self, attempts: int, elapsed: float, upcoming_sleep: float) -> bool:
        return False

    def __call__(self, retry_state: Any, elapsed_time: float | None = None, *, upcoming_sleep: float = 0.0) -> bool:
        return False


def is_native(strategy: object) -> bool:
    """True for the strategies above, which take a retry number / exception / attempt count directly."""
    return isinstance(strategy, (_Retry, _Wait, _Stop))
