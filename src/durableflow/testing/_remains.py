"""One resume for the scenarios whose crashes left the same remains.

A resumed process sees only what its crash left behind: the store's bytes (or,
in-process, the memory store's runs and records), the world, the time, and the
hash seed of the interpreter it is forked from (the same for every resume at
the same depth). Two crash points with no write
between them (``checkpoint.write.after#1`` and the step start that follows)
leave the same remains, so their resumes are one and the same run: it is lived
once, and each scenario is judged on it with its own crashed lives. At depth 2
that resume's own crash points are shared too: each of those scenarios gets
the captures the resume took, its own crashed lives before them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from durableflow import MemoryCheckpointer, SQLiteCheckpointer

from ._judge import Final, count_effects
from ._lives import Capture, Life
from ._stores import SQLiteImage

if TYPE_CHECKING:
    from durableflow import Checkpointer

    from ._stores import Stores


@dataclass
class Resumed:
    """The life that resumed from some remains, and how the run ended after it."""

    life: Life
    final: Final
    captures: dict[str, Capture] = field(default_factory=dict)
    """Depth 2: what a crash at each point of the resume would leave, by point (see ``share_captures``)."""


def remains(capture: Capture) -> bytes | None:
    """A digest of everything a resume from ``capture`` can see, or ``None`` where that cannot be told
    byte for byte: a store other than SQLite or memory (or a subclass of the user's), or the user's fakes
    (which may pickle less than they hold)."""
    store = capture.store
    if capture.world.get("fakes"):
        return None
    if isinstance(store, SQLiteImage):
        files = [store.image()]
    elif isinstance(store, SQLiteCheckpointer):  # what a process resuming from it reads: the file and its log
        try:
            files = [Path(f"{store.path}{suffix}").read_bytes() for suffix in ("", "-wal")]
        except FileNotFoundError:
            files = [store.path.read_bytes()] if store.path.exists() else []
    elif type(store) is MemoryCheckpointer:
        files = [_memory_image(store)]
    else:
        return None
    try:
        seen = pickle.dumps((capture.world, capture.clock, len(capture.lives)), pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    digest = hashlib.blake2b(seen)
    for data in files:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


def _memory_image(store: MemoryCheckpointer) -> bytes:
    """Everything a memory store holds, as bytes: each run's fields (lease and times included), its records,
    the listing indexes, and what it seals records with."""
    with store._lock:
        records = {run_id: [(r.seq, r.full, bytes(r.data)) for r in kept] for run_id, kept in store._records.items()}
        held = (store._runs, records, store._by_status, store._ended, store.lease_ttl, store.key)
        return pickle.dumps(held, pickle.HIGHEST_PROTOCOL)


def resumed_again(resumed: Resumed, capture: Capture) -> tuple[list[Life], Final]:
    """The scenario of ``capture`` as it ends after ``resumed``: its own crashed lives, the shared resume."""
    lives = [*capture.lives, resumed.life]
    effects, windows = count_effects(lives)
    # the world at the first crash: this scenario's own at depth 2, the same remains' at depth 1
    first = resumed.final.at_first_crash if capture.at_first_crash is None else capture.at_first_crash
    return lives, dataclasses.replace(resumed.final, effects=effects, windows=windows, at_first_crash=first)


def share_captures(resumed: Resumed, capture: Capture, scenario_id: str, captures: dict[str, Capture]) -> bool:
    """Depth 2: give the scenario of ``capture`` (``scenario_id``) the captures ``resumed`` took, as its own
    second crashes (``scenario_id>point``), its own crashed lives before them; ``False`` if one is gone (a
    second crash run already), and nothing given. The captures share their stores (``Capture.holders``)."""
    if any(taken.holders[0] <= 0 for taken in resumed.captures.values()):
        return False
    for point, taken in resumed.captures.items():
        taken.holders[0] += 1
        world = dict(taken.world)  # its own: a torn resume marks its captures' worlds
        lives = [*capture.lives, taken.lives[-1]]
        captures[f"{scenario_id}>{point}"] = Capture(
            lives, taken.store, world, taken.clock, taken.at_first_crash, holders=taken.holders
        )
    return True


def release(capture: Capture, stores: Stores, run_id: str, store: Checkpointer | None = None) -> None:
    """The scenario of ``capture`` is done with its store: closed and deleted once no other capture holds it;
    or done with ``store``, the copy of it that ``own_store`` gave it."""
    if store is not None and store is not capture.store:
        stores.discard(store, run_id)
        return
    capture.holders[0] -= 1
    if capture.holders[0] <= 0:
        stores.discard(capture.store, run_id)


def own_store(capture: Capture, stores: Stores, run_id: str) -> Checkpointer:
    """The store a resume from ``capture`` may write to: its own, or a copy of it while other captures hold
    it (the copy is the caller's to discard, and ``capture`` no longer holds the store)."""
    if capture.holders[0] <= 1:
        return capture.store
    capture.holders[0] -= 1
    return stores.copy(capture.store, run_id)
