"""Retry policies: constant and exponential delays, attempt limits, ctx.attempt, and giving up."""

import asyncio
import random
from typing import ClassVar

import pytest

from durableflow import (
    ConstantDelayRetryPolicy,
    Context,
    Event,
    ExponentialBackoffRetryPolicy,
    RetryPolicy,
    StartEvent,
    StopEvent,
    Workflow,
    retry_policy,
    step,
    stop_after_attempt,
    wait_exponential,
    wait_fixed,
    wait_random_exponential,
)


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def flaky_workflow(policy: RetryPolicy | None, fail_times: int) -> Workflow:
    """A one-step workflow failing its first `fail_times` attempts; it records each ctx.attempt."""

    class Unreliable(Workflow):
        attempts: list[int]

        @step(retry=policy)
        async def call(self, ev: StartEvent, ctx: Context) -> StopEvent:
            self.attempts.append(ctx.attempt)
            if len(self.attempts) <= fail_times:
                raise Flaky(f"attempt {ctx.attempt}")
            return StopEvent(result=f"ok after {ctx.attempt}")

    wf = Unreliable()
    wf.attempts = []
    return wf


def fixed(delay: float, attempts: int) -> RetryPolicy:
    return retry_policy(wait=wait_fixed(delay), stop=stop_after_attempt(attempts))


async def test_a_fixed_delay_retries_until_success_and_ctx_attempt_counts() -> None:
    """A step failing twice under a 3-attempt policy succeeds on attempt 3; ctx.attempt reads 1, 2, 3."""
    wf = flaky_workflow(fixed(0.02, 3), fail_times=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await wf.run() == "ok after 3"
    assert wf.attempts == [1, 2, 3]
    assert loop.time() - started >= 0.04  # two delays were waited


async def test_step_failing_every_attempt_fails_the_run_with_the_original_exception() -> None:
    """After maximum_attempts failures the run fails with the step's own last exception."""
    wf = flaky_workflow(fixed(0.001, 3), fail_times=99)
    with pytest.raises(Flaky, match="attempt 3"):
        await wf.run()
    assert wf.attempts == [1, 2, 3]


async def test_without_a_policy_a_step_runs_once() -> None:
    """A step with no retry policy is not retried."""
    wf = flaky_workflow(None, fail_times=1)
    with pytest.raises(Flaky, match="attempt 1"):
        await wf.run()
    assert wf.attempts == [1]


async def test_exponential_backoff_in_a_run() -> None:
    """An exponential wait retries a step up to the attempts its stop condition allows."""
    policy = retry_policy(wait=wait_exponential(multiplier=0.001, max=0.004), stop=stop_after_attempt(4))
    wf = flaky_workflow(policy, fail_times=3)
    assert await wf.run() == "ok after 4"
    assert wf.attempts == [1, 2, 3, 4]
    too_few = flaky_workflow(policy, fail_times=4)
    with pytest.raises(Flaky, match="attempt 4"):
        await too_few.run()


def test_the_old_policy_classes_warn_and_keep_their_numbers() -> None:
    """ConstantDelayRetryPolicy and ExponentialBackoffRetryPolicy warn that retry_policy replaces them, and
    answer as before: the n-th retry waits initial_delay * multiplier**(n-1), capped, until maximum_attempts."""
    error = Flaky()
    with pytest.warns(DeprecationWarning, match="ConstantDelayRetryPolicy is deprecated"):
        constant = ConstantDelayRetryPolicy(maximum_attempts=3, delay=1.5)
    assert [constant.next(0.0, n, error) for n in (1, 2, 3, 4)] == [1.5, 1.5, None, None]
    with pytest.warns(DeprecationWarning, match="ExponentialBackoffRetryPolicy is deprecated"):
        backoff = ExponentialBackoffRetryPolicy(
            maximum_attempts=6, initial_delay=1.0, multiplier=3.0, max_delay=20.0, jitter=False
        )
    assert [backoff.next(0.0, n, error) for n in range(1, 7)] == [1.0, 3.0, 9.0, 20.0, 20.0, None]


def test_full_jitter_spans_zero_to_the_delay_and_a_seed_repeats_it() -> None:
    """wait_random_exponential draws each delay from [0, d] of the un-jittered delay d (max included) and
    varies; the same seed gives the same delay, so a replayed retry waits as long as the first time."""
    random.seed(1234)
    policy = retry_policy(
        wait=wait_random_exponential(multiplier=2.0, exp_base=2.0, max=10.0), stop=stop_after_attempt(10)
    )
    error = Flaky()
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (7, 10.0)]:
        samples = [policy.next(0.0, attempt, error) for _ in range(200)]
        assert all(s is not None and 0 <= s <= ceiling for s in samples), attempt
        assert min(samples) < ceiling / 4 and max(samples) > 3 * ceiling / 4  # the whole range, not a constant
        seeded = {policy.next(0.0, attempt, error, seed=42) for _ in range(5)}  # type: ignore[call-arg]
        assert len(seeded) == 1 and 0 <= seeded.pop() <= ceiling
    assert policy.next(0.0, 10, error) is None


async def test_a_custom_policy_sees_the_error_attempts_and_elapsed_time() -> None:
    """A user policy with next(elapsed, attempts, error) decides retries; here only Flaky is retried."""
    calls: list[tuple[float, int, str]] = []

    class OnlyFlaky:
        def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
            calls.append((elapsed_time, attempts, type(error).__name__))
            return 0.01 if isinstance(error, Flaky) else None

    assert isinstance(OnlyFlaky(), RetryPolicy)

    class Mixed(Workflow):
        failures: ClassVar[list[Exception]] = [Flaky("one"), Flaky("two"), Fatal("stop")]

        @step(retry=OnlyFlaky())
        async def call(self, ev: StartEvent) -> StopEvent:
            raise self.failures.pop(0)

    with pytest.raises(Fatal, match="stop"):
        await Mixed().run()
    assert [(attempts, name) for _, attempts, name in calls] == [(1, "Flaky"), (2, "Flaky"), (3, "Fatal")]
    assert calls[0][0] < 0.01  # measured from the first failure
    assert calls[2][0] >= 0.02  # elapsed time since the first failure grows across the waits


async def test_plain_def_step_is_retried_and_sees_ctx_attempt() -> None:
    """Thread-run `def` steps are retried too, and read ctx.attempt."""
    seen: list[int] = []

    class Sync(Workflow):
        @step(retry=fixed(0.001, 2))
        def call(self, ev: StartEvent, ctx: Context) -> StopEvent:
            seen.append(ctx.attempt)
            if ctx.attempt == 1:
                raise Flaky()
            return StopEvent(result="ok")

    assert await Sync().run() == "ok"
    assert seen == [1, 2]


async def test_a_retry_sends_its_events_again_and_the_failed_attempts_stay_sent() -> None:
    """Each attempt is a new execution: what a failed attempt sent stays accepted, and the retry sends anew."""

    class Note(Event):
        n: int

    class Twice(Workflow):
        @step(retry=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(2)))
        async def send(self, ev: StartEvent, ctx: Context) -> Note | None:
            ctx.send_event(Note(n=ctx.attempt))
            if ctx.attempt == 1:
                raise Flaky()
            return None

        @step(num_workers=1)
        async def count(self, ev: Note, ctx: Context) -> StopEvent | None:
            got = ctx.collect_events(ev, [Note, Note])
            return None if got is None else StopEvent(result=[n.n for n in got])

    assert await Twice().run() == [1, 2]


def test_ctx_attempt_outside_a_step_is_an_error() -> None:
    """ctx.attempt only means something inside a step."""
    from durableflow import WorkflowRuntimeError

    class Any_(Workflow):
        @step
        async def s(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

    with pytest.raises(WorkflowRuntimeError, match="may only be called from within a step function"):
        _ = Context(Any_()).attempt


async def test_retry_policy_composes_tenacity_strategies() -> None:
    """retry_policy(retry=..., wait=..., stop=...) takes tenacity's own pieces: only the named errors are
    retried, stop_after_attempt counts attempts in all."""
    from tenacity import retry_if_exception_type, stop_after_attempt, wait_fixed

    from durableflow import retry_policy

    policy = retry_policy(retry=retry_if_exception_type(Flaky), wait=wait_fixed(0), stop=stop_after_attempt(3))
    assert await flaky_workflow(policy, fail_times=2).run() == "ok after 3"
    with pytest.raises(Flaky, match="attempt 3"):
        await flaky_workflow(policy, fail_times=3).run()
    assert policy.next(0.0, 1, Fatal()) is None  # not a retryable error
    assert retry_policy().next(0.0, 2, Flaky()) == 5.0  # the peer's defaults: 5 s apart, 3 attempts
    assert retry_policy().next(0.0, 3, Flaky()) is None


async def test_retry_info_tells_the_retry_number_and_the_last_error() -> None:
    """ctx.retry_info(): 0 retries and no error on the first attempt; then the retry number and what failed."""
    seen = []

    class Noted(Workflow):
        @step(retry_policy=fixed(0, 3))
        async def call(self, ev: StartEvent, ctx: Context) -> StopEvent:
            info = ctx.retry_info()
            seen.append((info.retry_number, repr(info.last_exception), info.last_failed_at is not None))
            if info.retry_number < 2:
                raise Flaky(f"try {info.retry_number}")
            return StopEvent(result="done")

    assert await Noted().run() == "done"
    assert seen == [(0, "None", False), (1, "Flaky('try 0')", True), (2, "Flaky('try 1')", True)]
