"""A ``ResourceConfig`` that cannot be read says which file, and where it was looked for, when a run builds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from durableflow import ResourceConfig, StartEvent, StopEvent, Workflow, step


class Settings(BaseModel):
    url: str
    retries: int = 2

    @field_validator("retries")
    @classmethod
    def not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("retries cannot be negative")
        return value


def workflow_reading(config: ResourceConfig) -> Workflow:
    class Reads(Workflow):
        @step
        async def go(self, ev: StartEvent, settings: Annotated[Settings, config]) -> StopEvent:
            return StopEvent(result=settings.url)

    return Reads()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


async def test_a_missing_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        await workflow_reading(ResourceConfig("settings.json")).run()
    assert str(caught.value) == f"No such file: settings.json (looked for as {tmp_path / 'settings.json'})"


async def test_a_missing_absolute_path_is_named_once(tmp_path: Path) -> None:
    missing = tmp_path / "conf" / "settings.json"
    with pytest.raises(FileNotFoundError) as caught:
        await workflow_reading(ResourceConfig(str(missing))).run()
    assert str(caught.value) == f"No such file: {missing}"


async def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text('{"url": 3')
    with pytest.raises(json.JSONDecodeError) as caught:
        await workflow_reading(ResourceConfig("settings.json")).run()
    assert str(caught.value).startswith(f"{tmp_path / 'settings.json'} is not valid JSON: Expecting ',' delimiter")
    assert (caught.value.lineno, caught.value.colno) == (1, 10)


async def test_a_model_that_does_not_fit_names_the_file_and_selector(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"app": {"retries": -1}}))
    with pytest.raises(ValidationError) as caught:
        await workflow_reading(ResourceConfig("settings.json", path_selector="app")).run()
    first = str(caught.value).splitlines()[0]
    assert first == f"2 validation errors for Settings (from {tmp_path / 'settings.json'} at app)"
    assert [error["loc"] for error in caught.value.errors()] == [("url",), ("retries",)]
    assert "retries cannot be negative" in str(caught.value)


async def test_a_file_that_fits_still_loads(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"app": {"url": "http://x"}}))
    assert await workflow_reading(ResourceConfig("settings.json", path_selector="app")).run() == "http://x"


class Strict(BaseModel):
    mode: str

    @field_validator("mode")
    @classmethod
    def known(cls, value: str) -> str:
        raise PydanticCustomError("unknown_mode", "unknown mode {mode}", {"mode": value})


async def test_a_custom_error_pydantic_cannot_rebuild_keeps_its_message_and_gets_a_note(tmp_path: Path) -> None:
    (tmp_path / "strict.json").write_text(json.dumps({"mode": "fast"}))

    class ReadsStrict(Workflow):
        @step
        async def go(self, ev: StartEvent, strict: Annotated[Strict, ResourceConfig("strict.json")]) -> StopEvent:
            return StopEvent(result=strict.mode)

    with pytest.raises(ValidationError) as caught:
        await ReadsStrict().run()
    assert "unknown mode fast" in str(caught.value)
    assert caught.value.__notes__ == [f"Strict was read from {tmp_path / 'strict.json'}"]
