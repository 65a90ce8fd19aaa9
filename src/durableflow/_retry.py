"""Retry policies for steps: how long to wait before the next attempt, or ``None`` to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class RetryPolicy(Protocol):
    """Decides whether a failed step runs again, and after how many seconds."""

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        """``attempts`` counts failures so far (1 after the first); ``None`` stops retrying."""
        ...


@dataclass(frozen=True)
class ConstantDelayRetryPolicy:
    """Retry after the same ``delay`` until ``maximum_attempts`` attempts have failed."""

    maximum_attempts: int = 3
    delay: float = 5.0

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        return self.delay if attempts < self.maximum_attempts else None


@dataclass(frozen=True)
class ExponentialBackoffRetryPolicy:
    """Retry after ``initial_delay * multiplier**(n-1)`` seconds, capped at ``max_delay``.

    With ``jitter`` each delay is drawn from its upper half, so that many runs
    failing together do not retry in lockstep.
    """

    maximum_attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        if attempts >= self.maximum_attempts:
            return None
        delay = min(self.max_delay, self.initial_delay * self.multiplier ** (attempts - 1))
        return random.uniform(delay / 2, delay) if self.jitter else delay
