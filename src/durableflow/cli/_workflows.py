"""Which workflows a command may run: only those the user names, never one a store names.

A user names workflows as ``MODULE:Class`` (a class or a zero-argument factory) on the command line
(``--workflow``, repeatable) or in a config file: ``[tool.durableflow] workflows = [...]`` in
``./pyproject.toml``, or ``workflows = [...]`` in ``./durableflow.toml``. Those modules are imported and
each workflow is registered under the name its runs are stored under; a stored run is matched by
comparing that name. A name read from a store is compared, never imported or called.

Modules are imported from the installed environment first and then the current directory, which is
added at the *end* of ``sys.path`` so that a file there cannot shadow an installed module; ``--path DIR``
(or ``path = [...]`` in the config) puts directories first, explicitly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tomllib
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from .._errors import WorkflowValidationError
from .._workflow import Workflow
from ._exits import UsageError

CONFIG_FILES = ("durableflow.toml", "pyproject.toml")
"""Read from the current directory, the first that holds a durableflow section wins."""
CONFIG_KEYS = {"workflows": "MODULE:Class targets", "path": "directories to import them from"}


@dataclass(frozen=True)
class Target:
    """One workflow the user named, checked: ``MODULE:Class`` as typed, what builds it, its stored name."""

    spec: str
    factory: Callable[[], Workflow]
    name: str


@dataclass(frozen=True)
class Config:
    """The ``workflows`` and ``path`` a config file lists, and which file it was (for messages)."""

    workflows: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    source: str = ""


def add_workflow_options(command: argparse.ArgumentParser, *, repeatable_workflow: bool = True) -> None:
    """``--path DIR`` and, unless the command takes its workflow as an argument, ``--workflow MODULE:Class``."""
    if repeatable_workflow:
        command.add_argument(
            "--workflow", action="append", default=[], metavar="MODULE:Class", dest="workflows",
            help="a workflow this command may run (repeatable); default: the workflows listed under "
            "[tool.durableflow] in ./pyproject.toml or in ./durableflow.toml",
        )  # fmt: skip
    command.add_argument(
        "--path", action="append", default=[], metavar="DIR", dest="paths",
        help="import workflow modules from DIR before anything else (repeatable); the current directory is "
        "searched last, after installed modules",
    )  # fmt: skip


def stored_name(workflow: Workflow) -> str:
    """The name runs of ``workflow`` are stored under (``RunInfo.workflow``): its ``workflow_name``."""
    return workflow.workflow_name


@final
class WorkflowRegistry:
    """The workflows a command may run, by stored name; built only from what the user named."""

    def __init__(self, paths: Sequence[str] = (), base: Path | None = None) -> None:
        self._by_name: dict[str, Target] = {}
        self.source = ""
        """Where the targets came from, for messages: ``--workflow`` or a config file."""
        _make_importable([(base or Path.cwd()) / path for path in paths])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkflowRegistry:
        """The workflows ``--workflow`` names or, without any, those the config lists (imported now)."""
        workflows: list[str] = getattr(args, "workflows", [])
        paths: list[str] = getattr(args, "paths", [])
        config = read_config()
        if paths or workflows:
            registry = cls(paths)
        else:
            registry = cls(config.path, Path(config.source).parent if config.source else None)
        if workflows:
            registry.source = "--workflow"
            for spec in workflows:
                registry.add(spec)
        else:
            registry.source = config.source
            for spec in config.workflows:
                registry.add(spec)
        return registry

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def add(self, spec: str) -> Target:
        """Import the workflow ``spec`` names and register it under its stored name."""
        factory, workflow = _imported(spec)
        target = Target(spec, factory, stored_name(workflow))
        known = self._by_name.get(target.name)
        if known is not None and known.factory is not factory:
            raise UsageError(
                f"{known.spec} and {spec} are both workflow {target.name!r}; runs are matched by that name, "
                "so name only one of them"
            )
        self._by_name[target.name] = target
        return target

    def get(self, name: str) -> Target | None:
        return self._by_name.get(name)

    def for_run(self, run_id: str, name: str) -> Target:
        """The registered workflow a stored run of workflow ``name`` continues with; ``UsageError`` saying
        how to name it when the user named none of that name."""
        found = self._by_name.get(name) if isinstance(name, str) else None
        if found is not None:
            return found
        if not self._by_name:
            named = "no workflow is named"
        else:
            named = f"the workflows named ({self.source}) are {', '.join(map(repr, self.names))}"
        raise UsageError(
            f"run {run_id!r} belongs to workflow {name!r}, and {named}. durableflow never imports a name read "
            "from a store: name the workflow's module yourself with --workflow MODULE:Class, or list it under "
            '[tool.durableflow] workflows = ["MODULE:Class"] in ./pyproject.toml'
        )


def resolve_target(target: str, paths: Sequence[str] = ()) -> Target:
    """What a command's ``MODULE:Class`` argument names; a bare name is looked up in the config's workflows."""
    if ":" in target:
        registry = WorkflowRegistry(paths)
        return registry.add(target)
    config = read_config()
    registry = WorkflowRegistry(paths or config.path, None if paths else _config_dir(config))
    registry.source = config.source
    for spec in config.workflows:
        registry.add(spec)
    found = registry.get(target)
    if found is None:
        listed = (
            f"{config.source} lists {', '.join(map(repr, registry.names))}" if registry.names else "no config lists it"
        )
        raise UsageError(f"{target!r} is not MODULE:Workflow (for example pipelines:DocumentPipeline), and {listed}")
    return found


def read_config(directory: Path | None = None) -> Config:
    """The durableflow section of ``durableflow.toml`` or ``pyproject.toml`` in ``directory`` (default: cwd)."""
    directory = directory or Path.cwd()
    for filename in CONFIG_FILES:
        file = directory / filename
        if not file.is_file():
            continue
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise UsageError(f"cannot read {file}: {exc}") from None
        section: Any = document.get("tool", {}).get("durableflow")
        if section is None and filename == "durableflow.toml":
            section = {key: value for key, value in document.items() if key != "tool"}
        if section is None:
            continue
        return _checked_config(section, str(file))
    return Config()


def _checked_config(section: Any, source: str) -> Config:
    if not isinstance(section, dict):
        raise UsageError(f"{source}: the durableflow section must be a table")
    unknown = sorted(set(section) - set(CONFIG_KEYS))
    if unknown:
        known = "; ".join(f"{key} ({meaning})" for key, meaning in CONFIG_KEYS.items())
        raise UsageError(f"{source}: unknown durableflow setting(s) {', '.join(map(repr, unknown))}; known: {known}")
    lists = {}
    for key in CONFIG_KEYS:
        value = section.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise UsageError(f"{source}: durableflow {key} must be a list of strings, not {value!r}")
        lists[key] = tuple(value)
    return Config(lists["workflows"], lists["path"], source)


def _config_dir(config: Config) -> Path | None:
    return Path(config.source).parent if config.source else None


def _make_importable(directories: Sequence[Path]) -> None:
    """Put ``directories`` first on ``sys.path`` (the user asked for them) and the current directory last."""
    for directory in reversed(directories):
        entry = str(directory.resolve())
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def _is_target(spec: str) -> bool:
    module, _, qualname = spec.partition(":")
    return all(part.isidentifier() for part in module.split(".")) and all(
        part.isidentifier() for part in qualname.split(".")
    )


def workflow_factory(target: str) -> Callable[[], Workflow]:
    """What ``MODULE:Workflow`` names, checked to build a valid workflow: a class or a zero-argument factory."""
    return _imported(target)[0]


def _imported(target: str) -> tuple[Callable[[], Workflow], Workflow]:
    """What ``target`` names, and the workflow it built when checked."""
    module_name, _, qualname = target.partition(":")
    if not module_name or not qualname or not _is_target(target):
        raise UsageError(f"{target!r} is not MODULE:Workflow (for example pipelines:DocumentPipeline)")
    _make_importable(())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"cannot import {module_name!r}: {exc} (searched the installed modules, then {os.getcwd()}; "
            "--path DIR searches DIR first)"
        ) from None
    except Exception as exc:
        traceback.print_exc()  # the user's own module is broken: its traceback is what they need
        raise UsageError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            where = getattr(module, "__file__", None) or module_name
            raise UsageError(f"module {module_name!r} ({where}) has no attribute {qualname!r}")
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
    return found, workflow
