"""Resource factories written inside a function, config files read on first use, and one build per step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel

from durableflow import (
    Resource,
    ResourceConfig,
    ResourceManager,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowValidationError,
    step,
)


class Database(BaseModel):
    url: str


async def test_a_factory_defined_in_a_function_gets_its_own_resources() -> None:
    """With postponed annotations, a factory's Annotated[..., Resource(...)] parameters naming classes of
    the enclosing function resolve, and the step receives what the chain built."""

    class Pool:
        def __init__(self, size: int) -> None:
            self.size = size

    class Repository:
        def __init__(self, pool: Pool) -> None:
            self.pool = pool

    def make_pool() -> Pool:
        return Pool(size=4)

    def make_repository(pool: Annotated[Pool, Resource(make_pool)]) -> Repository:
        return Repository(pool)

    class Lookup(Workflow):
        @step
        async def find(self, ev: StartEvent, repo: Annotated[Repository, Resource(make_repository)]) -> StopEvent:
            return StopEvent(result=repo.pool.size)

    assert await Lookup().run() == 4


async def test_a_fresh_resource_is_built_once_for_the_parameters_of_one_step() -> None:
    """A cache=False resource taken by two factories of the same step is built once for that step, and again
    for the next step."""
    builds: list[int] = []

    class Session:
        pass

    def new_session() -> Session:
        builds.append(1)
        return Session()

    def reader(session: Annotated[Session, Resource(new_session, cache=False)]) -> Session:
        return session

    def writer(session: Annotated[Session, Resource(new_session, cache=False)]) -> Session:
        return session

    class Both(Workflow):
        @step
        async def use(
            self,
            ev: StartEvent,
            r: Annotated[Session, Resource(reader, cache=False)],
            w: Annotated[Session, Resource(writer, cache=False)],
        ) -> StopEvent:
            return StopEvent(result=r is w)

    assert await Both().run() is True
    assert len(builds) == 1


async def test_a_cycle_of_factories_names_the_chain() -> None:
    """Factories that take each other fail the run with the chain of their names."""

    def first(other: Annotated[str, "later"]) -> str:  # the marker is set below
        return "first"

    def second(other: Annotated[str, Resource(first)]) -> str:
        return "second"

    first.__annotations__["other"] = Annotated[str, Resource(second)]

    class Loop(Workflow):
        @step
        async def use(self, ev: StartEvent, value: Annotated[str, Resource(first)]) -> StopEvent:
            return StopEvent(result=value)

    with pytest.raises(WorkflowValidationError, match=f"{first.__qualname__} -> {second.__qualname__} -> "):
        await Loop().run()


def test_a_config_file_is_found_when_first_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ResourceConfig keeps the name it was given; the file is looked for, from the directory current then,
    when it is first read, and a path_selector that does not lead to an object says where it stopped."""
    config = ResourceConfig(config_file="db.json", path_selector="primary")
    assert config.name == "db.json.primary"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "db.json").write_text(json.dumps({"primary": {"url": "sqlite://"}, "flags": [1]}))
    config.cls_factory = Database
    assert config.call() == Database(url="sqlite://")
    assert config.config_file == str(tmp_path / "db.json")
    config.path_selector = "flags.first"
    with pytest.raises(ValueError, match=r"db\.json at path flags, got: \[1\]"):
        config.call()


def test_validate_reads_the_config_files_a_factory_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """validate() checks config files read by a resource's factory too, and says it is the config that failed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "db.json").write_text(json.dumps({"host": "x"}))

    def connect(settings: Annotated[Database, ResourceConfig(config_file="db.json")]) -> str:
        return settings.url

    class Uses(Workflow):
        @step
        async def go(self, ev: StartEvent, url: Annotated[str, Resource(connect)]) -> StopEvent:
            return StopEvent(result=url)

    with pytest.raises(WorkflowValidationError, match="Resource config validation failed"):
        Uses(disable_validation=True).validate()
    (tmp_path / "db.json").write_text(json.dumps({"url": "sqlite://"}))
    Uses(disable_validation=True).validate(validate_resources=True)


async def test_a_resource_is_built_outside_a_run_with_call() -> None:
    """Resource(...).call(manager) builds it as a step would get it; a value set in the manager wins."""

    def number() -> int:
        return 7

    resource = Resource(number)
    assert await resource.call(ResourceManager()) == 7
    manager = ResourceManager()
    await manager.set(resource.name, 8)
    assert await resource.call(manager) == 8
