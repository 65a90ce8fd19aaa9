"""Run ids: UUIDv7s in the form of ``uuid.UUID.hex``, in the order they were made, never the same twice, not even
in a forked child."""

from __future__ import annotations

import os
import threading
import time
import uuid

from durableflow._workflow import _new_run_id


def test_run_ids_are_uuid7_hex_and_distinct() -> None:
    ids = [_new_run_id() for _ in range(600)]  # more than one batch of them
    assert len(set(ids)) == len(ids)
    for run_id in ids:
        parsed = uuid.UUID(hex=run_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (7, uuid.RFC_4122, run_id)


def test_run_ids_sort_in_the_order_they_were_made() -> None:
    """A store's index of run ids takes each new id at its end: ids made a millisecond apart sort in that order,
    and carry the time they were made."""
    made_at = time.time_ns() // 1_000_000
    ids = []
    for _ in range(5):
        ids.append(_new_run_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert abs(int(ids[0][:12], 16) - made_at) < 1_000


def test_a_forked_child_makes_ids_of_its_own() -> None:
    """Ids are taken from a batch made ahead: a child forked from this process must not hand out the ids its
    parent will."""
    _new_run_id()  # a batch is made, and the next ids wait in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, _new_run_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child_id) == 32
    assert child_id != _new_run_id()


def test_threads_taking_ids_at_once_never_share_one() -> None:
    """Runs started on loops in several threads take ids from the same batch: none is handed out twice."""
    taken: list[list[str]] = [[] for _ in range(8)]

    def take(into: list[str]) -> None:
        into.extend(_new_run_id() for _ in range(2000))

    threads = [threading.Thread(target=take, args=(ids,)) for ids in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [run_id for ids in taken for run_id in ids]
    assert len(every) == len(set(every)) == 16000
