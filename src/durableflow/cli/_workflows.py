"""Finding the workflow a command names: ``MODULE:Workflow``, imported and checked to build a valid workflow."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .._checkpointer import Checkpointer
from .._errors import WorkflowValidationError
from .._workflow import Workflow
from ._exits import UsageError


def load_workflow(target: str, checkpointer: Checkpointer) -> Workflow:
    """A fresh workflow instance from ``MODULE:Workflow``, storing its runs in ``checkpointer``."""
    workflow = workflow_factory(target)()
    workflow.checkpointer = checkpointer
    return workflow


def workflow_factory(target: str) -> Callable[[], Workflow]:
    """What ``MODULE:Workflow`` names, checked to build a valid workflow: a class or a zero-argument factory."""
    module_name, _, qualname = target.partition(":")
    if not module_name or not qualname:
        raise UsageError(f"{target!r} is not MODULE:Workflow (for example pipelines:DocumentPipeline)")
    cwd = os.getcwd()
    if sys.path[:1] not in ([cwd], [""]):  # a console script starts with its own directory there, not the cwd
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} (from {cwd}): {exc}") from None
    except Exception as exc:
        traceback.print_exc()  # the user's own module is broken: its traceback is what they need
        raise UsageError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise UsageError(f"module {module_name!r} has no attribute {qualname!r}")
    if isinstance(found, Workflow):
        raise UsageError(f"{target} is a Workflow instance; name its class or a zero-argument factory instead")
    if (isinstance(found, type) and not issubclass(found, Workflow)) or not callable(found):
        raise UsageError(f"{target} is not a Workflow subclass or a factory of one")
    try:
        workflow = found()
    except TypeError as exc:
        raise UsageError(f"{target}() needs arguments the command line cannot give: {exc}") from None
    if not isinstance(workflow, Workflow):
        raise UsageError(f"{target}() returned a {type(workflow).__name__}, not a Workflow")
    try:
        type(workflow).validate()
    except WorkflowValidationError as exc:
        raise UsageError(f"{target} is not a valid workflow: {exc}") from None
    return found  # type: ignore[no-any-return]
