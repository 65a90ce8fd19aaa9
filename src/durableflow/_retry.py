"""Retry policies for steps: how long to wait before the next attempt, or ``None`` to give up.

``retry_policy(retry=..., wait=..., stop=...)`` composes tenacity's own
strategies (re-exported here); the two ready-made policies keep
llama-index-workflows' numbers: ``attempts`` counts failures from 1, the
n-th retry waits ``initial_delay * multiplier**(n-1)``, and jitter draws from
``[0, delay]``, from ``random.Random(seed)`` when a seed is given.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import tenacity
from tenacity import (
    retry_all,
    retry_any,
    retry_if_exception,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_if_not_exception_type,
    retry_unless_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_before_delay,
    wait_chain,
    wait_combine,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_full_jitter,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

__all__ = [
    "ConstantDelayRetryPolicy",
    "ExponentialBackoffRetryPolicy",
    "RetryInfo",
    "RetryPolicy",
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
    "retry_policy",
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


class retry_always(retry_base):
    """Retry whatever the step raised."""

    def __call__(self, retry_state: Any) -> bool:
        return True


class retry_never(retry_base):
    """Never retry."""

    def __call__(self, retry_state: Any) -> bool:
        return False


class stop_never(stop_base):
    """Never give up (the run's timeout is then the bound)."""

    def __call__(self, retry_state: Any) -> bool:
        return False


class _Attempt:
    """What tenacity's strategies read of a retry: the attempt number, the outcome, the time spent."""

    def __init__(self, attempts: int, elapsed: float, error: BaseException) -> None:
        self.attempt_number = attempts
        self.seconds_since_start = elapsed
        self.idle_for = 0.0
        self.upcoming_sleep = 0.0
        self.outcome = tenacity.Future(attempts)
        self.outcome.set_exception(error)


@dataclass(frozen=True)
class _ComposedPolicy:
    retry: retry_base | None
    wait: wait_base
    stop: stop_base

    def next(self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None) -> float | None:
        state = _Attempt(max(attempts, 1), elapsed_time, error)
        if self.retry is not None and not self.retry(state):  # type: ignore[arg-type]
            return None
        state.upcoming_sleep = delay = float(self.wait(state))  # type: ignore[arg-type]
        return None if self.stop(state) else delay  # type: ignore[arg-type]


def retry_policy(
    retry: retry_base | None = None, wait: wait_base | None = None, stop: stop_base | None = None
) -> RetryPolicy:
    """A policy from tenacity's pieces: whether to retry an error, how long to wait, when to stop.

    Defaults as llama-index-workflows': retry any error, 5 seconds apart, 3 attempts in all.
    """
    return _ComposedPolicy(retry, wait if wait is not None else wait_fixed(5), stop or stop_after_attempt(3))


@dataclass(frozen=True)
class ConstantDelayRetryPolicy:
    """Retry after the same ``delay`` until ``maximum_attempts`` attempts have failed."""

    maximum_attempts: int = 3
    delay: float = 5.0

    def next(self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None) -> float | None:
        return self.delay if attempts < self.maximum_attempts else None


@dataclass(frozen=True)
class ExponentialBackoffRetryPolicy:
    """Retry after ``initial_delay * multiplier**(n-1)`` seconds for the n-th retry, capped at ``max_delay``.

    With ``jitter`` each delay is drawn from ``[0, delay]`` ("full jitter"), so
    that many runs failing together do not retry in lockstep; a ``seed`` makes
    the draw repeatable.
    """

    maximum_attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True

    def next(self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None) -> float | None:
        if attempts >= self.maximum_attempts:
            return None
        delay = max(0.0, min(self.max_delay, self.initial_delay * self.multiplier ** max(attempts - 1, 0)))
        if not self.jitter:
            return delay
        return (random.Random(seed) if seed is not None else random).uniform(0.0, delay)
