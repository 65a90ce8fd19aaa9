"""retry_policy's pieces: tenacity's classes, called with a retry number, an exception, or attempts so far."""

import re

import pytest
import tenacity

from durableflow import (
    StartEvent,
    StopEvent,
    Workflow,
    retry_if_exception_cause_type,
    retry_if_exception_message,
    retry_if_exception_type,
    retry_if_not_exception_message,
    retry_policy,
    step,
    stop_after_attempt,
    stop_after_delay,
    stop_before_delay,
    stop_never,
    wait_chain,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_incrementing,
    wait_none,
    wait_random,
    wait_random_exponential,
)


def test_waits_count_retries_from_zero_and_the_policy_asks_for_attempts_minus_one() -> None:
    """wait_exponential(n) is multiplier * exp_base**n for retry n (0 first); after the k-th failure the policy
    waits what retry k-1 waits, so the first retry waits `multiplier` seconds."""
    wait = wait_exponential(multiplier=0.5, exp_base=3, max=10)
    assert [wait(n) for n in range(4)] == [0.5, 1.5, 4.5, 10.0]
    policy = retry_policy(wait=wait, stop=stop_after_attempt(4))
    assert [policy.next(0.0, k, ValueError()) for k in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, None]


def test_a_seed_repeats_a_random_wait() -> None:
    """Random waits drawn with the same seed are equal; without one they vary within their range."""
    for wait in (wait_random(min=1, max=2), wait_random_exponential(multiplier=1, max=30)):
        assert wait(3, seed=7) == wait(3, seed=7)
    jittered = wait_exponential_jitter(initial=1, exp_base=2, max=100, jitter=1)
    assert {jittered(2, seed=5) for _ in range(3)} == {jittered(2, seed=5)}
    assert all(4 <= jittered(2) <= 5 for _ in range(50))
    draws = {wait_random(min=1, max=2)(0) for _ in range(20)}
    assert len(draws) > 1 and all(1 <= d <= 2 for d in draws)


def test_waits_combine_with_plus_and_chain_in_order() -> None:
    """`a + b` (and sum()) add delays; wait_chain uses its strategies one retry after another, then the last."""
    assert (wait_fixed(1) + wait_incrementing(start=0, increment=2))(2) == 5.0
    assert sum([wait_fixed(1), wait_fixed(2), wait_none()])(0) == 3.0  # type: ignore[operator]
    chain = wait_chain(wait_fixed(1), wait_fixed(4))
    assert [chain(n) for n in range(4)] == [1.0, 4.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="at least one"):
        wait_chain()


def test_retry_conditions_read_the_exception_and_combine_with_or_and() -> None:
    """Conditions answer for an exception; `|` is any, `&` is all; a message matches exactly or by pattern."""
    timeout_or_busy = retry_if_exception_type(TimeoutError) | retry_if_exception_message(match=r"busy \d+")
    assert timeout_or_busy(TimeoutError()) and timeout_or_busy(RuntimeError("server busy 503"))
    assert not timeout_or_busy(RuntimeError("bad request"))
    both = retry_if_exception_type(RuntimeError) & retry_if_not_exception_message(message="fatal")
    assert both(RuntimeError("again")) and not both(RuntimeError("fatal")) and not both(ValueError("again"))
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = ConnectionError("root")
    assert retry_if_exception_cause_type(ConnectionError)(wrapped)
    with pytest.raises(TypeError, match=re.escape("'message' or 'match'")):
        retry_if_exception_message()


def test_stop_conditions_read_attempts_time_and_the_coming_wait() -> None:
    """stop_after_attempt counts failures; stop_after_delay the time spent; stop_before_delay adds the next
    wait; `|` stops when either does and stop_never never does."""
    assert not stop_after_attempt(3)(2, 0.0) and stop_after_attempt(3)(3, 0.0)
    assert stop_after_delay(10)(1, 10.0) and not stop_after_delay(10)(1, 9.0)
    assert stop_before_delay(10)(1, 9.0, upcoming_sleep=1.0) and not stop_before_delay(10)(1, 8.0, upcoming_sleep=1.0)
    assert (stop_after_attempt(5) | stop_after_delay(1))(1, 2.0)
    assert not stop_never()(10**6, 10.0**6)
    policy = retry_policy(wait=wait_fixed(2), stop=stop_before_delay(5))
    assert policy.next(2.9, 1, ValueError()) == 2.0 and policy.next(3.0, 1, ValueError()) is None


def test_the_pieces_are_tenacity_strategies_too() -> None:
    """The same objects drive tenacity's own Retrying (here: three attempts, no wait, only ValueError)."""
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("again")
        return "done"

    retrying = tenacity.Retrying(
        retry=retry_if_exception_type(ValueError), wait=wait_fixed(0), stop=stop_after_attempt(3), reraise=True
    )
    assert retrying(flaky) == "done" and len(calls) == 3
    assert isinstance(wait_fixed(1), tenacity.wait.wait_fixed)


async def test_a_policy_taking_a_seed_gets_one_fixed_by_run_step_and_attempt() -> None:
    """The engine seeds `next(..., seed=)` from the run id, the step and the attempt, so a run replayed under
    the same id draws the same waits; another run draws others."""
    seeds: list[int | None] = []

    class Recording:
        def next(self, elapsed: float, attempts: int, error: Exception, *, seed: int | None = None) -> float | None:
            seeds.append(seed)
            return 0.0 if attempts < 3 else None

    class Failing(Workflow):
        @step(retry=Recording())
        async def call(self, ev: StartEvent) -> StopEvent:
            raise ValueError("always")

    for run_id in ("run-a", "run-a", "run-b"):
        with pytest.raises(ValueError):
            await Failing().run(run_id=run_id)
    first, again, other = seeds[0:3], seeds[3:6], seeds[6:9]
    assert first == again and None not in first and len(set(first)) == 3
    assert set(first).isdisjoint(other)
