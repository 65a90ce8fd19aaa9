"""Retry policies for steps: how long to wait before the next attempt, or ``None`` to give up.

``retry_policy(retry=..., wait=..., stop=...)`` composes the strategies of
``_retry_strategies`` (tenacity's own classes), as llama-index-workflows 2.26
does: ``attempts`` counts failures from 1, the wait strategy is asked for retry
number ``attempts - 1``, and a ``seed`` makes random waits repeatable. The two
ready-made policies of older releases build the same thing and warn.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import tenacity

from ._retry_strategies import (
    RetryCondition,
    StopCondition,
    WaitStrategy,
    is_native,
    stop_after_attempt,
    wait_exponential,
    wait_fixed,
    wait_random_exponential,
)

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "RetryInfo",
    "RetryPolicy",
    "retry_policy",
]


@runtime_checkable
class RetryPolicy(Protocol):
    """Decides whether a failed step runs again, and after how many seconds."""

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """``attempts`` counts failures so far (1 after the first); ``None`` stops retrying."""
        ...


@dataclass(frozen=True)
class RetryInfo:
    """``ctx.retry_info()`` inside a step: 0 retries and no exception on the first attempt."""

    retry_number: int
    elapsed_seconds: float
    last_exception: BaseException | None
    last_failed_at: datetime | None


class _Attempt:
    """What tenacity's strategies read of a retry: the attempt number, the outcome, the time spent."""

    def __init__(self, attempts: int, elapsed: float, error: BaseException) -> None:
        self.attempt_number = attempts
        self.seconds_since_start = elapsed
        self.idle_for = 0.0
        self.upcoming_sleep = 0.0
        self.outcome = tenacity.Future(attempts)
        self.outcome.set_exception(error)


class _ComposableRetryPolicy:
    """``retry_policy``'s result: ask ``retry``, then ``wait`` for the delay, then ``stop`` with that delay."""

    def __init__(self, retry: Any = None, wait: Any = None, stop: Any = None) -> None:
        self.retry = retry
        self.wait = wait if wait is not None else wait_fixed(5)
        self.stop = stop if stop is not None else stop_after_attempt(3)

    def __repr__(self) -> str:
        return f"retry_policy(retry={self.retry!r}, wait={self.wait!r}, stop={self.stop!r})"

    def next(self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None) -> float | None:
        # tenacity's own strategies (not ours) read a retry state instead; give them one
        state = _Attempt(max(attempts, 1), elapsed_time, error)
        if self.retry is not None and not (self.retry(error) if is_native(self.retry) else self.retry(state)):
            return None
        delay = float(self.wait(max(attempts - 1, 0), seed=seed) if is_native(self.wait) else self.wait(state))
        state.upcoming_sleep = delay
        stop = self.stop(attempts, elapsed_time, upcoming_sleep=delay) if is_native(self.stop) else self.stop(state)
        return None if stop else delay


def retry_policy(
    retry: RetryCondition | None = None, wait: WaitStrategy | None = None, stop: StopCondition | None = None
) -> RetryPolicy:
    """A policy from its pieces: whether to retry an error, how long to wait, when to stop.

    Defaults as llama-index-workflows': retry any error, 5 seconds apart, 3 attempts in all.
    Combine pieces with ``|`` and ``&`` (conditions) and ``+`` (waits).
    """
    return _ComposableRetryPolicy(retry, wait, stop)


def ConstantDelayRetryPolicy(maximum_attempts: int = 3, delay: float = 5) -> RetryPolicy:
    """Deprecated: ``retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(maximum_attempts))``."""
    warnings.warn(
        "ConstantDelayRetryPolicy is deprecated, use "
        "retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(n)) instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return _ComposableRetryPolicy(wait=wait_fixed(delay), stop=stop_after_attempt(maximum_attempts))


def ExponentialBackoffRetryPolicy(
    maximum_attempts: int = 5,
    initial_delay: float = 1.0,
    multiplier: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
) -> RetryPolicy:
    """Deprecated: ``retry_policy(wait=wait_exponential(...) or wait_random_exponential(...), stop=...)``.

    The n-th retry waits ``initial_delay * multiplier**(n-1)`` seconds, capped at
    ``max_delay``; with ``jitter`` the wait is drawn from ``[0, that]``.
    """
    warnings.warn(
        "ExponentialBackoffRetryPolicy is deprecated, use "
        "retry_policy(wait=wait_exponential(...), stop=stop_after_attempt(n)) instead",
        DeprecationWarning,
        stacklevel=2,
    )
    kind = wait_random_exponential if jitter else wait_exponential
    return _ComposableRetryPolicy(
        wait=kind(multiplier=initial_delay, exp_base=multiplier, max=max_delay),
        stop=stop_after_attempt(maximum_attempts),
    )
