"""Run ids: the form of ``uuid.uuid4().hex``, never the same twice, not even in a forked child."""

from __future__ import annotations

import os
import uuid

from durableflow._workflow import _new_run_id


def test_run_ids_are_random_uuid4_hex_and_distinct() -> None:
    ids = [_new_run_id() for _ in range(600)]  # more than one batch of them
    assert len(set(ids)) == len(ids)
    for run_id in ids:
        parsed = uuid.UUID(hex=run_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, run_id)


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
