"""Kill mode's machinery: captures at each crash point, the hang bound, replayed pairs, and a parent that never
leaves a forked life running unsupervised."""

from __future__ import annotations

import errno
import gc
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
import redis

from durableflow import (
    Context,
    Event,
    Resource,
    SQLiteCheckpointer,
    StartEvent,
    StopEvent,
    Workflow,
    plugin_manager,
    step,
)
from durableflow.testing import _stores, _zygote
from durableflow.testing._exploration import Exploration
from durableflow.testing._stores import Stores
from durableflow.testing._zygote import ZygoteUnavailable
from pytest_durableflow import explore

from .flows import AddThenRecord, InstanceProgress, PushThenRecord

SEED = 20260101

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open files and children in /proc")


def open_files() -> int:
    """How many file descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def children(of: int | None = None) -> set[int]:
    """This process's child processes (or process ``of``'s), zombies not yet reaped included."""
    parent = os.getpid() if of is None else of
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (command)", which may hold spaces
        except OSError:  # it ended meanwhile
            continue
        if int(fields[1]) == parent:
            found.add(int(stat.parent.name))
    return found


class Ledger:
    """A fake service that remembers each entry once, as the service it stands for does."""

    def __init__(self) -> None:
        self.entries: list[str] = []

    def add(self, entry: str) -> int:
        if entry not in self.entries:
            self.entries.append(entry)
        return len(self.entries)


class SlowToCopyLedger(Ledger):
    """A ledger that takes 150 ms to copy, as a fake holding a lot of data might."""

    def __deepcopy__(self, memo: dict[int, Any]) -> SlowToCopyLedger:
        time.sleep(0.15)
        copy = SlowToCopyLedger()
        copy.entries = list(self.entries)
        return copy


class LockedLedger(Ledger):
    """A ledger that guards its entries with a lock, which cannot be deep-copied."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


def get_ledger() -> Ledger:
    raise RuntimeError("the real ledger is not reachable from tests")


class CountThenPost(Workflow):
    """Checkpoints after each of ``count`` increments (two crash points each), then posts the total to a ledger."""

    @step
    async def count(self, ev: StartEvent, ctx: Context, ledger: Annotated[Ledger, Resource(get_ledger)]) -> StopEvent:
        for n in range(ev.count):
            await ctx.store.set("counted", n + 1)
            await ctx.checkpoint()
        return StopEvent(result=ledger.add(f"counted {ev.count}"))


# -- captures ------------------------------------------------------------------------------------------


def test_capturing_a_life_at_its_crash_points_is_not_charged_to_its_hang_bound() -> None:
    """A life that stands still at 20-odd crash points while each is captured (150 ms to copy its fake: over 3 s in
    all) is no hang: only its own time counts against ``hang_after`` (2 s, room for a loaded machine's life)."""
    report = explore(
        CountThenPost, {"count": 8}, mode="kill", hang_after=2.0, seed=SEED, max_scenarios=2,
        fakes={get_ledger: SlowToCopyLedger},
    )  # fmt: skip

    report.assert_ok()
    assert report.space > 20


def test_capturing_a_redis_store_opens_no_connection_per_crash_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each crash point of a kill-mode life on fakeredis is captured on the store's own connection: the parent's
    open files stay flat however many points it captures."""
    after_each: list[int] = []
    capture = Exploration.capture

    def counted(self: Exploration, *args: Any) -> Any:
        taken = capture(self, *args)
        after_each.append(open_files())
        return taken

    monkeypatch.setattr(Exploration, "capture", counted)
    explore(AddThenRecord, {"ids": [1, 2, 3]}, mode="kill", store="fakeredis", seed=SEED, max_scenarios=1).assert_ok()

    assert len(after_each) > 10
    # the life's own connections to the fake servers, which live in this process, open at its first writes
    assert after_each[-1] == after_each[len(after_each) // 2], after_each


def test_the_fakeredis_stores_of_an_exploration_share_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fakeredis store of an exploration, empty or a crash's copy, is a new prefix on one client."""
    clients: list[Any] = []
    new_store, copy_store = Stores.new, Stores.copy

    def recorded(self: Stores, *args: Any) -> Any:
        store = (copy_store if args else new_store)(self, *args)
        clients.append(store.client)
        return store

    monkeypatch.setattr(Stores, "new", recorded)
    monkeypatch.setattr(Stores, "copy", recorded)
    explore(AddThenRecord, {"ids": [1]}, store="fakeredis", seed=SEED).assert_ok()

    assert len(clients) > 1
    assert all(client is clients[0] for client in clients)


@pytest.mark.parametrize("store", ["fakeredis", "redis"])
def test_kill_mode_on_a_redis_store_gives_the_in_process_verdicts(store: str, request: pytest.FixtureRequest) -> None:
    """Crash points captured from a Redis store (its keys copied on the server) are judged as in-process crashes are."""
    url = request.getfixturevalue("redis_url") if store == "redis" else store
    inprocess = explore(PushThenRecord, {"ids": [1, 2]}, seed=SEED)
    kill = explore(PushThenRecord, {"ids": [1, 2]}, mode="kill", store=url, seed=SEED)

    assert inprocess.failures
    assert {o.id: (o.ok, o.kind) for o in kill.scenarios} == {o.id: (o.ok, o.kind) for o in inprocess.scenarios}


def test_a_replayed_pair_reaches_both_its_crash_points_whatever_depth_it_is_given() -> None:
    """``only="a>b"`` replays that pair in kill mode at the default depth 1, as the CLI's re-run line asks for it."""
    explored = explore(InstanceProgress, {"ids": [1, 2]}, depth=2, seed=SEED)
    pair = next(o for o in explored.failures if ">" in o.id)

    replayed = explore(InstanceProgress, {"ids": [1, 2]}, mode="kill", only=pair.id)

    assert [(o.id, o.kind) for o in replayed.scenarios] == [(pair.id, pair.kind)]
    assert replayed.depth == 2


# -- a parent that never leaves a child behind ------------------------------------------------------------


def test_a_fake_that_cannot_be_copied_fails_kill_mode_clearly_and_leaves_no_child() -> None:
    """A fake holding a lock stops kill mode at its first capture with an error saying fakes must be deep-copyable,
    and the life that waited there is killed and reaped."""
    before = children()
    with pytest.raises(TypeError, match="copies your fakes at every crash point, so they must be deep-copy"):
        explore(CountThenPost, {"count": 1}, mode="kill", fakes={get_ledger: LockedLedger})

    assert children() == before


def test_an_interrupt_while_a_child_waits_to_be_captured_kills_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the parent while a life waits at a crash point ends that life too, instead of letting it run on."""
    capture = Exploration.capture
    captured: list[str] = []

    def interrupted(self: Exploration, store: Any, hits: list[str], clock: float | None) -> Any:
        captured.append(hits[-1])
        if len(captured) == 3:
            raise KeyboardInterrupt
        return capture(self, store, hits, clock)

    monkeypatch.setattr(Exploration, "capture", interrupted)
    before = children()
    with pytest.raises(KeyboardInterrupt):
        explore(AddThenRecord, {"ids": [1, 2]}, mode="kill")

    assert children() == before


def test_a_fork_that_fails_leaves_no_pipe_open_and_the_collector_unfrozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the system refuses to fork, the error reaches the caller and kill mode's pipes and frozen objects don't
    outlive it."""

    def refuse() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    def no_zygote(*args: Any) -> Any:
        raise ZygoteUnavailable("this test forks every life here")

    files, frozen = open_files(), gc.get_freeze_count()
    monkeypatch.setattr(_zygote, "hand_over", no_zygote)
    monkeypatch.setattr(os, "fork", refuse)
    with pytest.raises(OSError, match="temporarily unavailable"):
        explore(AddThenRecord, {"ids": [1]}, mode="kill")

    assert gc.get_freeze_count() == frozen
    assert open_files() == files


def test_objects_the_test_froze_itself_stay_frozen_across_a_kill_mode_exploration() -> None:
    """Kill mode freezes the collector around each fork; it must not thaw what the test had frozen before."""
    kept: list[list[int]] = [[]]  # a container: tracked by the collector, and listed by it unless frozen
    gc.freeze()
    try:
        explore(AddThenRecord, {"ids": [1]}, mode="kill").assert_ok()
        assert not any(o is kept for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_an_exploration_that_fails_to_start_closes_the_servers_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after kill mode started its fake world's servers (a broken entry-point plugin) closes them."""

    def broken() -> None:
        raise RuntimeError("a broken durableflow plugin")

    files = open_files()
    monkeypatch.setattr(plugin_manager, "load_entry_points", broken)
    with pytest.raises(RuntimeError, match="a broken durableflow plugin"):
        explore(AddThenRecord, {"ids": [1]}, mode="kill", fakes={get_ledger: Ledger})

    assert open_files() == files


def test_the_zygote_warms_up_on_a_run_of_its_own() -> None:
    """The run that spares every forked life the engine's first-use costs completes, on scratch stores."""
    from durableflow.testing._warmup import warm_up

    from .flows import PushThenRecord

    warm_up(PushThenRecord)


def test_a_scenario_store_is_deleted_once_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scenario's store (the copy it resumed from) is deleted as soon as the scenario is judged, so an
    exploration's files only ever shrink as it goes, and none is left after it."""
    import glob

    from durableflow.testing import _stores, explore

    from .flows import PushThenRecord

    # a directory of this test's own: other processes' explorations share /dev/shm
    monkeypatch.setattr(_stores, "_scratch", lambda: str(tmp_path))
    pattern = f"{tmp_path}/durableflow-crashtest-*/*"
    files: list[int] = []

    def count(outcome: object, planned: int) -> None:
        files.append(len(glob.glob(pattern)))

    report = explore(PushThenRecord, {"ids": [1, 2, 3]}, mode="kill", seed=1, on_scenario=count)

    assert len(report.scenarios) > 10
    assert files == sorted(files, reverse=True)
    assert files[0] > files[-1]
    assert glob.glob(pattern) == []


BUILT: list[str] = []


def counted_redis() -> redis.Redis:
    BUILT.append("counted")
    return redis.Redis(decode_responses=True, db=3)


def faked_redis() -> redis.Redis:
    BUILT.append("faked")
    return redis.Redis()


class TwoClients(Workflow):
    @step
    async def go(
        self,
        ev: StartEvent,
        served: Annotated[redis.Redis, Resource(counted_redis)],
        faked: Annotated[redis.Redis, Resource(faked_redis)],
    ) -> StopEvent:
        return StopEvent(result=None)


def test_a_world_learns_its_redis_clients_options_once_before_lives_fork() -> None:
    """Kill mode learns how each Redis resource decodes before forking: a life that had to learn it
    itself would build the factory's client, which costs more than the life. A resource the user fakes
    by its factory is never asked."""
    from durableflow.testing._world import FakeWorld

    BUILT.clear()
    world = FakeWorld({faked_redis: object})
    try:
        world.learn_redis_options(TwoClients)
        assert BUILT == ["counted"]
        override = world.overrides()[redis.Redis]
        assert override.options(counted_redis) == {"decode_responses": True, "db": 3}
        assert BUILT == ["counted"]
    finally:
        world.close()


def test_zombies_and_the_second_worker_check_are_lived_by_twins_of_the_reference_life(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each zombie scenario's first worker, and the second-worker check, is a twin forked from the reference
    life where it stands, not a life of its own from the run's start: the test's process forks one life."""
    forked: list[int] = []
    fork = os.fork

    def counted() -> int:
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counted)
    report = explore(AddThenRecord, {"ids": [1, 2]}, mode="kill", seed=SEED)

    report.assert_ok()
    assert any(o.id.startswith("zombie@") for o in report.scenarios)
    assert len(forked) == 1


class Halfway(Event):
    marks: str


class KilledTwins(Workflow):
    """Two steps; the second worker of each zombie scenario SIGKILLs the paused first worker (a twin of the
    reference life), as the OOM killer or a segfault would. ``marks``: where the reference life's pid is."""

    @step
    async def first(self, ev: StartEvent) -> Halfway:
        strike(ev.marks)
        return Halfway(marks=ev.marks)

    @step
    async def second(self, ev: Halfway) -> StopEvent:
        strike(ev.marks)
        return StopEvent(result="done")


def strike(marks: str) -> None:
    try:
        reference = int(Path(marks, "reference").read_text())
    except (OSError, ValueError):  # a life of no exploration's (the zygote's warm-up)
        return
    if reference in (os.getpid(), os.getppid()):  # the reference life, or a twin of it
        return
    for pid in children(of=reference):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # a child that ended and was reaped since the listing
            continue
        Path(marks, f"killed-{pid}").touch()


def test_a_zombie_twin_killed_while_paused_is_a_crash_and_the_reference_life_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A twin that dies without a word shares its pipes with the reference life: that life's lines are
    never taken for the twin's, nor a word meant for the twin for the life's own, and the zombie scenario is
    judged as the crash it was (the second worker finished the run)."""
    fork, test = os.fork, os.getpid()

    def noted() -> int:
        pid = fork()
        if pid and os.getpid() == test:  # the test's process forks the reference life, and only it
            Path(tmp_path, "reference").write_text(str(pid))
        return pid

    monkeypatch.setattr(os, "fork", noted)
    report = explore(KilledTwins, {"marks": str(tmp_path)}, mode="kill", hang_after=10, seed=SEED)

    report.assert_ok()
    zombies = {o.id for o in report.scenarios if o.id.startswith("zombie@")}
    assert zombies == {"zombie@step.first.start#1", "zombie@step.second.start#1"}
    assert len(list(tmp_path.glob("killed-*"))) == 2
    assert report.reference == "done"


@pytest.mark.parametrize("kernel_copies", ["all", "none", "part"], ids=["copy_file_range", "fallback", "stops_early"])
def test_a_capture_copies_the_store_file_and_its_log_byte_for_byte(
    kernel_copies: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash leaves (the database file and its write-ahead log) is copied whole, however the copy is made:
    also where the kernel's copy answers 0 before the end of the file, as some file systems do."""
    if kernel_copies == "none":

        def refuse(*args: Any) -> int:
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    if kernel_copies == "part":
        copied = {}  # bytes the kernel copied, by target file descriptor
        real = os.copy_file_range

        def stops_early(source: int, target: int, count: int) -> int:
            left = (1 << 20) - copied.get(target, 0)
            done = real(source, target, min(count, left)) if left > 0 else 0
            copied[target] = copied.get(target, 0) + done
            return done

        monkeypatch.setattr(os, "copy_file_range", stops_early)
    monkeypatch.setattr(_stores, "_scratch", lambda: str(tmp_path))
    stores = Stores("sqlite", kill=True)
    try:
        store = stores.new()
        assert isinstance(store, SQLiteCheckpointer)
        store.runs()  # the schema
        data, log = os.urandom(3 << 20), os.urandom(5000)
        store.close()
        store.path.write_bytes(data)
        Path(f"{store.path}-wal").write_bytes(log)
        copy = stores.copy(store, "run")
        assert isinstance(copy, SQLiteCheckpointer)
        assert copy.path.read_bytes() == data
        assert Path(f"{copy.path}-wal").read_bytes() == log
    finally:
        stores.close()


def test_a_zygote_tells_the_cpu_time_it_and_the_lives_it_reaped_used() -> None:
    """What the benchmark adds up: it grows by what an exploration's resumed lives used."""
    explore(AddThenRecord, {"ids": [1, 2]}, mode="kill", seed=SEED)
    zygotes = [zygote for zygote in _zygote._zygotes.values() if zygote.alive()]
    assert zygotes
    before = sum(zygote.cpu_seconds() for zygote in zygotes)
    explore(AddThenRecord, {"ids": [1, 2]}, mode="kill", seed=SEED)
    assert sum(zygote.cpu_seconds() for zygote in zygotes) > before
