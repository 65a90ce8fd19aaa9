"""The pytest plugin, loaded through the ``pytest11`` entry point.

It imports nothing of durableflow until a fixture is used, so test runs that
never touch it pay next to nothing for it being installed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from durableflow import Checkpointer
    from durableflow.testing import ExplorationSummary, FrozenClock

    from ._fixtures import CrashHarness, FakeResources

_OPTIONS = (
    # name, type, choices, default, help
    ("mode", str, ("inprocess", "kill"), "inprocess",
     "crash in-process (an exception user code cannot swallow) or kill a forked child"),
    ("depth", int, (1, 2), 1, "1, or 2 to crash once more at every point of each resume"),
    ("seed", int, None, None, "seed for sampling scenarios (default: random, printed in the header)"),
    ("store", str, ("memory", "sqlite", "fakeredis", "redis"), None,
     "store behind the checkpointer fixture and explorations"),
    ("redis-url", str, None, "redis://127.0.0.1:6379/0", "Redis URL used when the store is redis"),
    ("max-scenarios", int, None, None, "sample at most this many scenarios per exploration"),
    ("hang-after", float, None, 5.0, "seconds one life of a run may take before the scenario fails as a hang"),
    ("downtime", float, None, 300.0, "seconds the clock jumps across each crash: how much later a resume starts"),
    ("compact", str, ("yes", "no"), "no", "write every checkpoint as a full snapshot (the read-back checks it)"),
    ("scenario", str, None, None, "replay only this scenario id (what a failure's re-run line passes)"),
    ("report", str, None, None, "write an HTML crash matrix of every exploration to this path"),
)  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("durableflow", "durableflow crash exploration")
    for name, kind, choices, default, text in _OPTIONS:
        ini = "durableflow_" + name.replace("-", "_")
        metavar = "|".join(map(str, choices)) if choices else name.split("-")[-1].upper()
        group.addoption(
            f"--durableflow-{name}", dest=ini, type=kind, choices=choices, default=None, metavar=metavar,
            help=f"{text} (ini: {ini})",
        )  # fmt: skip
        parser.addini(ini, text, default=None if default is None else str(default))


def option(config: pytest.Config, name: str) -> Any:
    """A setting from the command line, else the ini file, else its default."""
    value = config.getoption("durableflow_" + name.replace("-", "_"))
    if value is None:
        value = ini_value(config, name)
    if name == "seed" and value is None:
        value = config.stash.setdefault(_seed_key, random.randrange(2**32))
    return value


def ini_value(config: pytest.Config, name: str) -> Any:
    """A setting from the ini file, else its default."""
    raw = config.getini("durableflow_" + name.replace("-", "_"))
    kind = next(kind for n, kind, _, _, _ in _OPTIONS if n == name)
    return kind(raw) if raw not in (None, "") else None


_seed_key = pytest.StashKey[int]()


def check_ini(config: pytest.Config) -> None:
    """Refuse an ini value of the wrong type or out of its choices now, not in the first test that reads it."""
    for name, kind, choices, _, _ in _OPTIONS:
        ini = "durableflow_" + name.replace("-", "_")
        raw = config.getini(ini)
        if raw in (None, ""):
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise pytest.UsageError(f"ini option {ini} = {raw!r}: expected a {kind.__name__}") from None
        if choices is not None and value not in choices:
            allowed = ", ".join(map(str, choices))
            raise pytest.UsageError(f"ini option {ini} = {raw!r}: expected one of {allowed}")
        if isinstance(value, int | float) and value < 0:
            raise pytest.UsageError(f"ini option {ini} = {raw!r}: expected 0 or more")


def pytest_configure(config: pytest.Config) -> None:
    check_ini(config)
    config.addinivalue_line(
        "markers",
        "durableflow(mode=, depth=, store=, max_scenarios=, hang_after=, downtime=, compact=, shards=): "
        "defaults for this test's crash explorations; shards=N splits each across N test items (for xdist)",
    )
    config.pluginmanager.register(_Explorations(config), "durableflow-explorations")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "durableflow_seed" in workerinput:
        config.stash[_seed_key] = workerinput["durableflow_seed"]  # every xdist worker uses the controller's seed
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "durableflow-xdist")


class _XdistHooks:
    """Registered only when pytest-xdist is installed."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["durableflow_seed"] = option(node.config, "seed")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test on a fresh event loop when no other plugin (pytest-asyncio, anyio) does:
    the ``[pytest]`` extra alone is enough to write async tests against durableflow."""
    import inspect

    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    for other in ("asyncio", "anyio", "trio"):
        if pyfuncitem.config.pluginmanager.hasplugin(other) and pyfuncitem.get_closest_marker(other) is not None:
            return None
    if pyfuncitem.config.pluginmanager.hasplugin("asyncio") and _asyncio_auto(pyfuncitem.config):
        return None
    import asyncio

    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def _asyncio_auto(config: pytest.Config) -> bool:
    try:
        return str(config.getini("asyncio_mode")) == "auto"
    except ValueError:
        return False


def pytest_report_header(config: pytest.Config) -> str:
    store = option(config, "store") or "memory (kill mode: sqlite)"
    return (
        f"durableflow: seed={option(config, 'seed')} mode={option(config, 'mode')} "
        f"depth={option(config, 'depth')} store={store}"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("durableflow")
    shards = marker.kwargs.get("shards") if marker else None
    if shards and "durableflow_shard" in metafunc.fixturenames:
        metafunc.parametrize(
            "durableflow_shard", [(i, shards) for i in range(shards)], ids=[f"shard{i}" for i in range(shards)]
        )


class _Explorations:
    """Gathers every exploration of the session for the terminal summary and the HTML matrix.

    Explorations travel as the test report's user properties, so that those
    run by xdist workers reach the controller too.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reports: list[ExplorationSummary] = []

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.reports += [
                cast("ExplorationSummary", {**value, "test_passed": report.passed})  # what CrashHarness.explore
                for name, value in report.user_properties  # adds, after xdist's round trip
                if name == "durableflow" and isinstance(value, dict)
            ]

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.reports or hasattr(self.config, "workerinput"):
            return
        from durableflow.testing import write_html
        from durableflow.testing._report import summary_lines

        terminalreporter.write_sep("=", "durableflow crash exploration")
        for line in summary_lines(self.reports, option(self.config, "seed")):
            terminalreporter.write_line(line)
        path = option(self.config, "report")
        if path:
            write_html(self.reports, path)
            terminalreporter.write_line(f"crash matrix written to {path}")


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def durableflow_shard(request: pytest.FixtureRequest) -> tuple[int, int] | None:
    """Which part of each exploration this test item runs (set by ``@pytest.mark.durableflow(shards=N)``)."""
    return getattr(request, "param", None)


@pytest.fixture
def crash_harness(request: pytest.FixtureRequest, durableflow_shard: tuple[int, int] | None) -> CrashHarness:
    """Explore a workflow's crash points: ``crash_harness.explore(MyWorkflow, {"ids": [1, 2]}).assert_ok()``.

    Settings come from the ``--durableflow-*`` options (or ini), then the
    test's ``durableflow`` marker, then the call's arguments. Fakes registered
    with ``fake_resources`` in the same test serve every scenario, fresh each time.
    """
    from ._fixtures import CrashHarness

    fakes = request.getfixturevalue("fake_resources") if "fake_resources" in request.fixturenames else None
    return CrashHarness(request, durableflow_shard, fakes)


@pytest.fixture
def fake_resources() -> Iterator[FakeResources]:
    """Serve fakes for resources: ``fake_resources.override(get_client, FakeClient, record=True)``.

    Redis-typed resources get a fakeredis client automatically. Recorded
    fakes log their calls to ``fake_resources.calls``.
    """
    from ._fixtures import FakeResources

    with FakeResources() as fakes:
        yield fakes


@pytest.fixture
def fake_redis(fake_resources: FakeResources) -> Any:
    """A fakeredis client on this test's fake server, the one Redis-typed resources get.

    It decodes responses as the client it stands for does: like the Redis resources the test's runs
    were served (``decode_responses=True`` gives text), raw bytes until one was. The server outlives
    any crash and resume within the test, as a real one would.
    """
    from ._fixtures import FollowingRedis

    fake_resources.world.redis_server  # noqa: B018 - without fakeredis, fail here naming the extra
    return FollowingRedis(fake_resources.world)


@pytest.fixture
def real_redis(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A client of the real Redis at ``--durableflow-redis-url`` (what ``--durableflow-store=redis`` uses);
    skips the test when none answers. Keys the test creates are deleted afterwards."""
    try:
        import redis
    except ImportError:
        from durableflow._errors import install_hint  # here: loading the plugin imports no durableflow

        raise pytest.UsageError(f"real_redis needs redis-py, in {install_hint('redis')}") from None
    url = option(request.config, "redis-url")
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        from durableflow._checkpointer import without_password

        pytest.skip(f"no Redis answers at {without_password(url)} ({exc})")
    before = set(client.scan_iter(count=1000))
    try:
        yield client
    finally:
        made = [key for key in client.scan_iter(count=1000) if key not in before]
        if made:
            client.delete(*made)
        client.close()


@pytest.fixture
def checkpointer(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Checkpointer]:
    """An empty checkpointer for this test, from ``--durableflow-store``: memory, sqlite, fakeredis or redis."""
    from ._fixtures import open_test_store

    store = open_test_store(request, tmp_path)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def frozen_clock() -> Iterator[FrozenClock]:
    """Frozen time that durableflow reads: sleeps jump to their deadline, ``advance()`` fires timeouts."""
    try:
        import freezegun  # noqa: F401 - here, to say what to install
    except ImportError:
        from durableflow._errors import install_hint

        raise pytest.UsageError(f"frozen_clock needs freezegun, in {install_hint('pytest')}") from None
    from durableflow import use_clock
    from durableflow.testing import FrozenClock
    from durableflow.testing._clock import frozen_time

    # pytest times tests through _pytest.timing: frozen, it would report the frozen hours as durations
    with (
        frozen_time("2030-01-01 00:00:00", ignore=["_pytest.timing"]) as factory,
        use_clock(FrozenClock(factory)) as clock,
    ):
        yield clock  # type: ignore[misc]


@pytest.fixture
def durable_context() -> Any:
    """Build a Context with preset state and pending events, to start a run from a chosen point.

    ``ctx = durable_context(MyWorkflow(), state={"done": [1]}, events=[Converted(doc_id=2)])``
    then ``await wf.run(ctx=ctx)`` delivers those events as if the run had got there.
    """
    from ._fixtures import build_context

    return build_context


def seed_for(config: pytest.Config, nodeid: str) -> int:
    """A test's own seed: the session seed and its node id, so order and xdist worker do not matter."""
    digest = hashlib.sha256(f"{option(config, 'seed')}:{nodeid}".encode()).hexdigest()
    return int(digest[:8], 16)
