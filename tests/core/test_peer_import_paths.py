"""A llama-index-workflows module ports by rewriting ``workflows`` to ``durableflow`` in its imports.

``durableflow.retry_policy`` is both the peer's module path and the ``retry_policy`` function it has always
been: importing the module makes it the package's attribute, so the module is callable as the function.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import durableflow

# The peer's public modules and the names a peer user imports from each; the peer's spellings of
# durableflow's errors and serializers are the same classes under the peer's name.
PEER_PATHS = {
    "events": ["Event", "StartEvent", "StopEvent", "InputRequiredEvent", "HumanResponseEvent", "StepFailedEvent",
               "StepStateChanged", "StepState", "WorkflowFailedEvent", "WorkflowTimedOutEvent",
               "WorkflowCancelledEvent", "InternalDispatchEvent"],
    "decorators": ["step", "catch_error", "StepConfig", "WorkflowGraphCheck", "StepGraphCheck"],
    "workflow": ["Workflow"],
    "handler": ["WorkflowHandler"],
    "resource": ["Resource", "ResourceConfig", "ResourceManager"],
    "context": ["Context", "JsonSerializer", "PickleSerializer"],
    "context.state_store": ["DictState", "encode_state", "decode_state"],
    "representation.validate": ["validate_graph", "build_step_graph", "GraphValidationError"],
    "testing": ["WorkflowTestRunner", "WorkflowTestResult"],
    "errors": ["WorkflowValidationError", "WorkflowConfigurationError", "WorkflowRuntimeError",
               "WorkflowTimeoutError"],
}  # fmt: skip
RENAMED = {
    ("errors", "ContextSerdeError"): durableflow.SnapshotError,
    ("errors", "WorkflowCancelledByUser"): durableflow.WorkflowCancelledError,
    ("errors", "ContextStateError"): durableflow.WorkflowRuntimeError,
    ("errors", "WorkflowStepDoesNotExistError"): durableflow.WorkflowRuntimeError,
    ("context", "BaseSerializer"): durableflow.JsonSerializer,
    ("context.serializers", "JsonPickleSerializer"): durableflow.PickleSerializer,
    ("context.state_store", "InMemoryStateStore"): durableflow.StateStore,
    ("resource", "_Resource"): durableflow.Resource,
}


@pytest.mark.parametrize("path", sorted(PEER_PATHS))
def test_each_peer_module_path_holds_durableflows_own_objects(path: str) -> None:
    module = importlib.import_module(f"durableflow.{path}")
    for name in PEER_PATHS[path]:
        assert getattr(module, name) is getattr(durableflow, name), f"durableflow.{path}.{name}"
        assert name in module.__all__


@pytest.mark.parametrize(("path", "name"), sorted(RENAMED))
def test_a_peer_name_for_a_durableflow_class_is_that_class(path: str, name: str) -> None:
    assert getattr(importlib.import_module(f"durableflow.{path}"), name) is RENAMED[path, name]


# What a peer user imports from ``workflows.retry_policy``: the same objects as ``durableflow``'s own.
PEER_RETRY_POLICY = ["RetryPolicy", "RetryInfo", "ConstantDelayRetryPolicy", "ExponentialBackoffRetryPolicy",
                     "RetryCondition", "StopCondition", "WaitStrategy", "retry_if_exception_type",
                     "stop_after_attempt", "wait_fixed", "wait_exponential"]  # fmt: skip


@pytest.mark.parametrize("name", PEER_RETRY_POLICY)
def test_the_peers_retry_policy_path_holds_durableflows_own_names(name: str) -> None:
    module = importlib.import_module("durableflow.retry_policy")
    assert getattr(module, name) is getattr(durableflow, name)
    assert name in module.__all__ and name in durableflow.__all__


def test_durableflow_retry_policy_is_the_module_and_still_builds_a_policy() -> None:
    """Imported as a module (``import durableflow.retry_policy`` replaces the package's attribute with it), it
    is still called as the function, with the function's signature."""
    import inspect

    import durableflow.retry_policy as module
    from durableflow import retry_policy
    from durableflow.retry_policy import retry_policy as function

    assert retry_policy is module is durableflow.retry_policy
    assert inspect.signature(retry_policy) == inspect.signature(function)
    policy = retry_policy(stop=durableflow.stop_after_attempt(2), wait=durableflow.wait_fixed(0))
    assert policy.next(0.0, 1, ValueError("once")) == 0
    assert policy.next(0.0, 2, ValueError("twice")) is None


PEER_MODULE = """
from workflows import Context, Workflow, step
from workflows.context.state_store import DictState
from workflows.decorators import catch_error
from workflows.errors import WorkflowRuntimeError
from workflows.events import Event, StartEvent, StepFailedEvent, StopEvent
from workflows.resource import Resource
from workflows.retry_policy import retry_policy, stop_after_attempt, wait_fixed
from workflows.testing import WorkflowTestRunner
from typing import Annotated


class Counted(Event):
    n: int


def get_prefix() -> str:
    return "doc-"


class Flow(Workflow):
    tries = 0

    @step(retry_policy=retry_policy(stop=stop_after_attempt(3), wait=wait_fixed(0)))
    async def first(self, ctx: Context[DictState], ev: StartEvent) -> Counted:
        Flow.tries += 1
        if Flow.tries < 2:
            raise WorkflowRuntimeError("flaky once")
        await ctx.store.set("seen", ev.n)
        return Counted(n=ev.n, note="kept")

    @step
    async def second(
        self, ctx: Context[DictState], ev: Counted, prefix: Annotated[str, Resource(get_prefix)]
    ) -> StopEvent:
        return StopEvent(result=f"{prefix}{ev.n}:{ev.note}:{await ctx.store.get('seen')}")

    @catch_error
    async def recover(self, ev: StepFailedEvent) -> StopEvent:
        return StopEvent(result="recovered")


async def main() -> tuple[object, int]:
    result = await WorkflowTestRunner(Flow()).run(start_event=StartEvent(n=7))
    return result.result, Flow.tries
"""


async def test_a_peer_module_runs_once_its_imports_name_durableflow(tmp_path: Path) -> None:
    """The module above is written against the peer; only its imports change, as the README's porting guide says."""
    ported = PEER_MODULE.replace("from workflows", "from durableflow")
    (tmp_path / "ported_flow.py").write_text(ported)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("ported_flow")
        assert await module.main() == ("doc-7:kept:7", 2)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ported_flow", None)
