"""What the plugin's fixtures hand out: the harness bound to a test, fake resources, stores, contexts."""

from __future__ import annotations

import copy
import inspect
import os
import shlex
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, final

import pytest

from durableflow import (
    Checkpointer,
    Context,
    Event,
    MemoryCheckpointer,
    RedisCheckpointer,
    SQLiteCheckpointer,
    StartEvent,
    Workflow,
    WorkflowRuntimeError,
    override_resources,
)
from durableflow._errors import install_hint
from durableflow._graph import graph_of
from durableflow.testing import Outcome, Report, explore, run_scenario, summary_of
from durableflow.testing._settings import fixed_hash_seed
from durableflow.testing._world import Fake, FakeWorld, Recorder, _name_of

from .plugin import ini_value, option, seed_for

_SETTINGS = ("mode", "depth", "store", "max_scenarios", "hang_after", "downtime", "compact")


@final
class FakeResources:
    """The ``fake_resources`` fixture: fakes served in place of resources, for this test and its explorations."""

    def __init__(self) -> None:
        self.world = FakeWorld()
        self.fakes: dict[object, Fake] = {}
        """Factories of fresh fakes, one per exploration scenario."""
        self.recorded: set[object] = set()
        self._served: dict[object, Fake] = {}
        self._stack = ExitStack()

    def __enter__(self) -> FakeResources:
        self._stack.enter_context(self.world.serving())
        self._stack.enter_context(override_resources(self._served))  # read live: later overrides apply too
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.world.close()

    def override(self, key: object, fake: Any, record: bool = False) -> Any:
        """Serve ``fake`` wherever a resource's factory is ``key`` (or its annotation is the type ``key``).

        ``fake`` is a factory (a class or function), or an instance that each
        exploration scenario gets a deep copy of. With ``record=True`` its
        method calls go to ``calls`` and are compared across crashes. Returns
        the fake this test's own runs use.
        """
        factory: Fake = fake if _is_factory(fake) else (lambda: copy.deepcopy(fake))
        self.fakes[key] = factory
        instance = fake() if _is_factory(fake) else fake
        served = instance
        if record:
            self.recorded.add(key)
            served = Recorder(instance, _name_of(key), self.world.calls.append)
        self._served[key] = lambda: served
        return instance

    @property
    def calls(self) -> list[str]:
        """Calls made to recorded fakes in this test, as ``"name.method(args)"``."""
        return self.world.calls


@final
class FollowingRedis:
    """The ``fake_redis`` fixture: a client of the test's fake server that decodes as the Redis resources
    the test's runs were served do (raw bytes until one was)."""

    fake_redis = True
    """Served as a fake (``override(get_cache, lambda: fake_redis)``), an exploration's own fake server stands
    in for it, like any fakeredis client: the test's server would keep the scenarios' keys out of the world."""

    def __init__(self, world: FakeWorld) -> None:
        self._world = world
        self._clients: dict[tuple[bool, int], Any] = {}

    def _client(self) -> Any:
        options = self._world.served_redis_options or {}
        key = (bool(options.get("decode_responses")), int(options.get("db", 0)))
        if key not in self._clients:
            self._clients[key] = self._world.redis_client({"decode_responses": key[0], "db": key[1]})
        return self._clients[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)

    def __repr__(self) -> str:
        return f"<fake_redis {self._client()!r}>"


def _is_factory(fake: Any) -> bool:
    return inspect.isclass(fake) or inspect.isfunction(fake) or inspect.ismethod(fake)


@final
class CrashHarness:
    """The ``crash_harness`` fixture: ``explore`` and ``run_scenario`` with this test's settings.

    Settings, weakest first: ini, the test's ``durableflow`` marker, the
    command line, the call's own arguments.
    """

    def __init__(
        self, request: pytest.FixtureRequest, shard: tuple[int, int] | None, fakes: FakeResources | None
    ) -> None:
        self._request = request
        self._shard = shard
        self._fakes = fakes
        self._explored = 0
        """Explorations this test has run: a re-run line names which one it replays."""
        self._replay = _replayed(option(request.config, "scenario"))
        """``(nth exploration, scenario id)`` that ``--durableflow-scenario`` replays, if given."""

    def explore(
        self, workflow: type[Workflow] | Callable[[], Workflow], start: StartEvent | Mapping[str, Any], **options: Any
    ) -> Report:
        """Explore every crash point of a run of ``workflow``; call ``.assert_ok()`` on the result."""
        __tracebackhide__ = True
        self._explored += 1
        settings = self._settings(options)
        if self._replay is not None and self._replay[0] != self._explored:  # it replays another exploration
            name = (workflow if isinstance(workflow, type) else type(workflow())).__name__
            report = Report(name, settings.get("mode", "inprocess"), settings.get("depth", 1), settings["seed"])
        else:
            report = explore(workflow, start, **settings)
        if report.failures and report.mode == "kill" and not fixed_hash_seed():
            report.notes.append(UNSEEDED)
        self._request.node.user_properties.append(("durableflow", summary_of(self._request.node.nodeid, report)))
        return report

    def run_scenario(
        self,
        workflow: type[Workflow] | Callable[[], Workflow],
        start: StartEvent | Mapping[str, Any],
        crash_at: str,
        **options: Any,
    ) -> Outcome:
        """Run one scenario by id (``"step.convert.end#2"``) and return its outcome."""
        __tracebackhide__ = True
        settings = self._settings(options)
        for name in ("depth", "seed", "max_scenarios", "only", "shard"):
            settings.pop(name, None)
        return run_scenario(workflow, start, crash_at, **settings)

    def _late_fakes(self) -> FakeResources | None:
        """``fake_resources`` requested after ``crash_harness`` was made (``request.getfixturevalue`` in the
        test, or a fixture set up later): its fakes serve the explorations too."""
        if "fake_resources" not in self._request.fixturenames:
            return None
        fakes: FakeResources = self._request.getfixturevalue("fake_resources")
        self._fakes = fakes
        return fakes

    def _settings(self, call: dict[str, Any]) -> dict[str, Any]:
        config = self._request.config
        settings: dict[str, Any] = {}
        for name in _SETTINGS:
            value = ini_value(config, name.replace("_", "-"))
            if value is not None:
                settings[name] = value
        marker = self._request.node.get_closest_marker("durableflow")
        if marker is not None:
            settings.update({k: v for k, v in marker.kwargs.items() if k != "shards"})
        for name in _SETTINGS:
            value = config.getoption("durableflow_" + name)
            if value is not None:
                settings[name] = value
        if isinstance(settings.get("compact"), str):
            settings["compact"] = settings["compact"] == "yes"
        settings["seed"] = seed_for(config, _unsharded(self._request.node.nodeid, self._shard))
        settings["hash_seed"] = option(config, "seed")  # the session's: its zygotes serve every test
        if settings.get("store") == "redis":
            settings["store"] = option(config, "redis-url")
        if self._replay is not None:
            settings["only"] = self._replay[1]
        elif self._shard is not None:  # a replayed scenario runs in the item its re-run line names, unsharded
            settings["shard"] = self._shard
        fakes = self._fakes or self._late_fakes()
        if fakes is not None:
            settings["fakes"] = dict(fakes.fakes)
            settings["record"] = frozenset(fakes.recorded)
        # options given on the command line would be lost on a re-run (ini, marker and call apply again by themselves)
        given = "".join(
            f" --durableflow-{name.replace('_', '-')}={shlex.quote(str(value))}"
            for name in ("mode", "store", "redis_url", "hang_after", "downtime", "compact")
            if (value := config.getoption("durableflow_" + name)) is not None
        )
        seeded = ""
        if call.get("mode", settings.get("mode")) == "kill":  # the hash seeds its lives ran under
            given += f" --durableflow-seed={option(config, 'seed')}"
            # the lives that die are forked from this process: under its seed, which only the environment fixes
            seeded = f"PYTHONHASHSEED={seed} " if (seed := fixed_hash_seed()) else ""
        given = given.replace("{", "{{").replace("}", "}}")
        nth = "" if self._explored <= 1 else f"{self._explored}:"
        here = _from_here(self._request)
        settings["rerun"] = f"{seeded}pytest '{here}' --durableflow-scenario='{nth}" + "{id}'" + given
        settings.update(call)
        return settings


UNSEEDED = (
    "the lives that died ran under this process's hash seed, a random one (PYTHONHASHSEED is not set): a failure "
    "that depends on the order of a set there may not come back on its re-run line; with PYTHONHASHSEED set, "
    "the line carries it"
)


def _replayed(scenario: str | None) -> tuple[int, str] | None:
    """Which of the test's explorations a ``--durableflow-scenario`` replays, and the scenario id:
    ``"2:step.a.end#1"`` is the second exploration's; a bare id, the first's."""
    if not scenario:
        return None
    nth, colon, scenario_id = scenario.partition(":")
    return (int(nth), scenario_id) if colon and nth.isdigit() else (1, scenario)


def _from_here(request: pytest.FixtureRequest) -> str:
    """The test's node id with its file relative to where pytest was started, so the re-run line works there."""
    where = os.path.relpath(request.node.path, request.config.invocation_params.dir)
    return "::".join([where.replace(os.sep, "/"), *request.node.nodeid.split("::")[1:]])


def _unsharded(nodeid: str, shard: tuple[int, int] | None) -> str:
    """The node id without the shard's parameter id: the shards of one test share its seed, hence its sample."""
    test, bracket, params = nodeid.partition("[")
    if shard is None or not bracket:
        return nodeid
    kept = [part for part in params[:-1].split("-") if part != f"shard{shard[0]}"]
    return f"{test}[{'-'.join(kept)}]" if kept else test


def open_test_store(request: pytest.FixtureRequest, tmp_path: Path) -> Checkpointer:
    """The ``checkpointer`` fixture's store: empty, and private to this test and xdist worker."""
    kind = option(request.config, "store") or "memory"
    if kind == "memory":
        return MemoryCheckpointer()
    if kind == "sqlite":
        return SQLiteCheckpointer(tmp_path / "runs.db")
    if kind == "fakeredis":
        try:
            import fakeredis
        except ImportError:
            message = f"--durableflow-store=fakeredis needs fakeredis, in {install_hint('pytest')}"
            raise pytest.UsageError(message) from None
        return RedisCheckpointer(fakeredis.FakeRedis())
    if kind == "redis":
        worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
        prefix = f"durableflow-test:{worker}:{uuid.uuid4().hex[:12]}"
        store = RedisCheckpointer(option(request.config, "redis-url"), prefix=prefix)
        request.addfinalizer(lambda: _delete_prefix(store, prefix))
        return store
    raise pytest.UsageError(f"--durableflow-store must be memory, sqlite, fakeredis or redis, not {kind!r}")


def _delete_prefix(store: RedisCheckpointer, prefix: str) -> None:
    keys = list(store.client.scan_iter(match=f"{prefix}:*"))
    if keys:
        store.client.delete(*keys)


def build_context(
    workflow: Workflow, state: Mapping[str, Any] | None = None, events: Iterable[Event] = (), run_id: str | None = None
) -> Context[Any]:
    """A Context holding ``state``; with ``events``, a run in progress that owes them to their steps."""
    ctx: Context[Any] = Context(workflow)
    for key, value in (state or {}).items():
        ctx.store._put(key, value)
    events = list(events)
    if events:
        graph = graph_of(type(workflow))
        run = ctx._state
        run.run_id, run.status = run_id or uuid.uuid4().hex, "running"
        for event in events:
            consumers = graph.consumers(type(event))
            if not consumers:
                raise WorkflowRuntimeError(f"no step of {graph.workflow_path} accepts {type(event).__name__}")
            eid = run.add_event(event)
            for spec in consumers:
                run.add_delivery(eid, spec.name)
    return ctx
