"""Judging a crashed run: how it ended (``Final``) against the uninterrupted reference, as a kind and a diff."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._lives import Life

STUCK = "stuck: "
"""How a life that could do nothing on its own any more begins its error (``_stuck``)."""


@dataclass
class Final:
    """How a run ended, read back from its store and its world: what scenarios are judged on."""

    status: str
    result: Any
    error: str | None
    state: dict[str, Any]
    world: dict[str, Any]
    answers: dict[str, Any] = field(default_factory=dict)
    """What each effect returned, by key: the outside world's answers to the run."""
    effects: Counter[str] = field(default_factory=Counter)
    """How often each effect's function ran to completion, over all the lives (see ``count_effects``)."""
    windows: Counter[str] = field(default_factory=Counter)
    """How many crashes fell while each effect's result was not yet durable."""
    at_first_crash: dict[str, Any] = field(default_factory=dict)
    """The world when the run first died: up to there it went as the reference did, so what the
    reference did from there on says whether a different end is work lost or done twice."""
    at_last_crash: dict[str, Any] | None = None
    """The world when the run last died, before the life that ended it; ``None`` where no crash came
    before the writes of the life that ended the run (a zombie's first worker wakes after the second one
    finished). What no life had written by then was written by that life alone: not work done twice."""
    torn: bool = False
    """A copy of the world it resumed from was taken while a thread of the life stayed inside it."""


def count_effects(lives: list[Life]) -> tuple[Counter[str], Counter[str]]:
    """How often each effect's function ran to completion, and how many crashes fell in its window.

    Effect ``K`` is open from ``effect.K.before`` until ``effect.K.after``,
    which comes once its record is durable: each ``after`` is a run of its
    function. A crash while it is open may have run it (counted, and allowed
    once: its idempotency key exists to absorb that). An attempt closed by
    the next ``before`` under its key, or open when its life ended otherwise,
    raised and recorded nothing: a retry the reference makes too, not a run.
    Effects under other keys may open and close in between (concurrent steps).
    """
    runs: Counter[str] = Counter()
    windows: Counter[str] = Counter()
    for life in lives:
        crashed = life.ending == "crashed"
        open_effects: set[str] = set()
        for index, hit in enumerate(life.hits):
            key, phase = _effect_of(hit)
            if phase == "before":
                open_effects.discard(key)  # the attempt before it raised
                if not (crashed and index == len(life.hits) - 1):  # died here: its function never began
                    open_effects.add(key)
            elif phase == "after":
                runs[key] += 1
                open_effects.discard(key)
        if crashed:
            runs.update(open_effects)
            windows.update(open_effects)
    return runs, windows


def _effect_of(hit: str) -> tuple[str, str]:
    """``("charge", "before")`` for ``effect.charge.before#1``; ``("", "")`` for any other crash point."""
    point = hit.rpartition("#")[0]
    if not point.startswith("effect."):
        return "", ""
    key, _, phase = point.removeprefix("effect.").rpartition(".")
    return key, phase


def judge(reference: Final, final: Final, lives: list[Life], crashes: list[str]) -> tuple[str | None, str]:
    """The failure kind and a diff, or ``(None, "")`` when the scenario ended like the reference."""
    last = lives[-1]
    if last.ending == "hang" and STUCK in (error := last.error or ""):  # (a zombie's second worker's says whose)
        return "lost work", (
            f"after the restart the run can do nothing on its own ({error.partition(STUCK)[2]}), but no "
            "InputRequiredEvent reached the stream, so nobody was asked: the question was lost with the process "
            "(return the InputRequiredEvent from the step, or pass it as ctx.wait_for_event's waiter_event, which "
            "a resume sends again), or the dead life was to send what it waits for"
        )
    if last.ending == "hang":
        return "hang", f"a life of the run did not finish within the bound (died at {' then '.join(crashes)})"
    if last.ending in ("error", "input"):
        return "error during resume", last.error or ""
    reached = [life.hits[-1] for life in lives if life.ending == "crashed" and life.hits]
    if len(reached) != len(crashes) or not all(map(same_place, reached, crashes)):
        missing = next((c for r, c in zip(reached, crashes, strict=False) if not same_place(r, c)), None)
        missing = missing or crashes[min(len(reached), len(crashes) - 1)]
        return "unreached", f"the run never reached {missing}: it does not hit the same crash points on every run"
    if (final.status, final.error) != (reference.status, reference.error):
        return "error during resume", _diff(
            {"status": reference.status, "error": reference.error}, {"status": final.status, "error": final.error}
        )
    allowed = reference.effects
    for key, count in final.effects.items():
        if key in allowed and count > allowed[key] + final.windows[key]:
            return "duplicated effect", f"effect {key!r} ran {count} times; the reference run ran it {allowed[key]}"
    # An effect whose key varies (the minute, a fresh id) is another key after a restart: count all of them.
    ran, may = final.effects.total(), reference.effects.total() + final.windows.total()
    if ran > may:
        keys = ", ".join(repr(key) for key in final.effects if key not in allowed)
        return "duplicated effect", (
            f"effects ran {ran} times in all; the reference run ran them {reference.effects.total()} times. "
            f"Keys the reference never used: {keys} (does the key depend on the time or a random value?)"
        )
    if _ends_alike(reference, final):
        return None, ""
    if reference.world != final.world:
        return _world_kind(reference.world, final.world, final.at_first_crash, final.at_last_crash), _diff(
            _world_entries(reference.world), _world_entries(final.world)
        )
    if final.result != reference.result:
        return "divergent result", _diff(reference.result, final.result, "result")
    return "divergent state", _diff(reference.state, final.state, "state key")


def shape(hit: str) -> str:
    """A crash point without what may vary between runs: an effect's key, a user point's name, the count."""
    point = hit.rpartition("#")[0] or hit
    kind, _, rest = point.partition(".")
    if kind == "effect":
        return f"effect.*.{rest.rpartition('.')[2]}"
    if kind == "user":
        return "user.*"
    return point


def same_place(reached: str, planned: str) -> bool:
    """``reached`` is the crash point ``planned`` named, or the same place under another varying name."""
    return reached == planned or shape(reached) == shape(planned)


def _ends_alike(reference: Final, final: Final) -> bool:
    """The same result, state and world — as they are, or once ``final``'s effects are answered as the
    reference's were (a relabelling can also unsort what was sorted, so both are tried)."""

    def end(run: Final) -> tuple[Any, ...]:
        return run.world, run.result, run.state

    return end(final) == end(reference) or end(_with_the_references_answers(final, reference)) == end(reference)


def _with_the_references_answers(final: Final, reference: Final) -> Final:
    """``final`` as if its effects had been answered as the reference's were.

    An effect whose answer varies (a fresh id, a provider's receipt) may be
    answered differently in a run that crashed before recording it: both runs
    are right. Each text the two answers differ by is swapped for the
    reference's wherever it appears, so the rest of the comparison is fair.
    """
    swaps: dict[str, str] = {}
    for key, answer in final.answers.items():
        if key in reference.answers and answer != reference.answers[key]:
            _pair_texts(answer, reference.answers[key], swaps)
    # effects under keys that vary between runs (the minute, a fresh id): paired in the order they ran,
    # their keys (which reach the world inside idempotency keys) and their answers both
    theirs = [(key, answer) for key, answer in reference.answers.items() if key not in final.answers]
    ours = [(key, answer) for key, answer in final.answers.items() if key not in reference.answers]
    seen = json.dumps(final.world) if ours else ""
    for (our_key, our_answer), (their_key, their_answer) in zip(ours, theirs, strict=False):
        if their_key not in seen:  # the reference's key already reached the world: both keys went out
            _pair_texts(our_key, their_key, swaps)
        if our_answer != their_answer:
            _pair_texts(our_answer, their_answer, swaps)
    if not swaps:
        return final
    # all at once: answers that traded places (two receipts) must not be swapped back
    texts = re.compile("|".join(map(re.escape, sorted(swaps, key=len, reverse=True))))

    def swapped(value: Any) -> Any:
        if isinstance(value, str):
            return texts.sub(lambda match: swaps[match.group()], value)
        if isinstance(value, dict):
            return {swapped(k): swapped(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swapped(item) for item in value]
        return value

    return dataclasses.replace(
        final, result=swapped(final.result), state=swapped(final.state), world=swapped(final.world)
    )


def _pair_texts(found: Any, expected: Any, swaps: dict[str, str]) -> None:
    """Pair the differing texts at the same places in two answers; short ones are too common to swap."""
    if isinstance(found, str) and isinstance(expected, str):
        if found != expected and len(found) >= _MIN_SWAP:
            swaps[found] = expected
    elif isinstance(found, dict) and isinstance(expected, dict):
        for key in found.keys() & expected.keys():
            _pair_texts(found[key], expected[key], swaps)
    elif isinstance(found, list) and isinstance(expected, list):
        for pair in zip(found, expected, strict=False):
            _pair_texts(*pair, swaps)


_MIN_SWAP = 6


def _world_kind(
    expected: dict[str, Any], found: dict[str, Any], at_crash: dict[str, Any], at_last_crash: dict[str, Any] | None
) -> str:
    """Past the reference's end, in the direction the reference moved from where the run crashed, is a
    duplicated effect (a counter decremented twice goes down); short of it is lost work. A change the
    reference did not need after the crash is work done again.

    Unless it cannot be: a key the reference never wrote (or a method it never called), one nothing had
    written by the last crash (the life that ended the run wrote it alone), or a time written where the
    reference wrote another (no counter counts to a time): the run did not do work twice but decided
    otherwise, a divergent write."""
    more = less = other = False
    for section in ("redis", "calls"):
        old, new, first = (_fields(world.get(section, {})) for world in (expected, found, at_crash))
        last = first if at_last_crash is None else _fields(at_last_crash.get(section, {}))
        for key in old.keys() | new.keys():
            end, got = _size(old.get(key)), _size(new.get(key))
            if got == end:
                continue
            # where the first crash left it, while the run still went as the reference did; one created
            # after that (HSETNX stock 10, then HINCRBY -1) moved, once created, from where the last left it
            remaining = end - _size(first[key] if key in first else last.get(key))
            if _is_time(end) and _is_time(got):
                other = True
            elif remaining and (got - end) * remaining < 0:
                less = True
            elif not (_wrote(old, key, section) or _wrote(first, key, section)) or (
                at_last_crash is not None and not _wrote(last, key, section)
            ):
                other = True
            else:
                more = True
    if other and not more:
        return "divergent write"
    if more and not less and not other:
        return "duplicated effect"
    if less and not more:
        return "lost work"
    return "divergent state"


def _wrote(entries: dict[str, Any], key: str, section: str) -> bool:
    """``entries`` hold ``key``: the same Redis key (or hash field), or a call of the same method, whatever
    its arguments (an idempotency key minted anew, the minute, are other arguments to the same call)."""
    if section != "calls":
        return key in entries
    method = key.partition("(")[0]
    return any(call.partition("(")[0] == method for call in entries)


def _is_time(value: float) -> bool:
    """A number written as a time: seconds (or milliseconds) since the epoch, from 2001 to 2103."""
    return 1e9 <= value < 4.3e9 or 1e12 <= value < 4.3e12


def _fields(entries: dict[str, Any]) -> dict[str, Any]:
    """World entries with each field of a Redis hash as an entry of its own: a counter kept in a hash
    (HINCRBY stock apples -1) moves by its value, not by the hash's number of fields."""
    flat: dict[str, Any] = {}
    for key, entry in entries.items():
        if isinstance(entry, dict) and entry.get("type") == "hash" and isinstance(entry.get("value"), dict):
            flat.update((f"{key}\x00{field}", value) for field, value in entry["value"].items())
        else:
            flat[key] = entry
    return flat


def _size(value: Any) -> float:
    """How much of something a world entry holds: a count, a length, or a number stored as text."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    content = value.get("value") if isinstance(value, dict) else value
    if isinstance(content, str):
        try:
            return float(content)
        except ValueError:
            return 1
    if isinstance(content, list | dict):
        return len(content)
    return 1


_ABSENT = object()


def _diff(expected: Any, found: Any, name: str = "", labels: tuple[str, str] = ("reference run", "resumed run")) -> str:
    """Each place where the two differ, named, with the reference's value and the resumed run's."""
    lines: list[str] = []
    width = max(map(len, labels)) + 2
    first, second = (f"{label}:".ljust(width) for label in labels)

    def walk(a: Any, b: Any, path: str) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys(), key=str):
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path} {key}".strip())
            return
        lines.extend([f"{path or 'value'}:", f"  {first}{_show(a)}", f"  {second}{_show(b)}"])

    walk(expected, found, name)
    return "\n".join(lines[:45] + (["..."] if len(lines) > 45 else []))


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 300 else text[:297] + "..."


def _world_entries(world: dict[str, Any]) -> dict[str, Any]:
    """The world flattened to readable names: redis key 'converted', call charge(...)."""
    entries: dict[str, Any] = {}
    for key, entry in world.get("redis", {}).items():
        db, _, name = key.partition(":")
        entries[f"redis key {name!r}" + ("" if db == "0" else f" (db {db})")] = entry["value"]
    for call, count in world.get("calls", {}).items():
        entries[f"calls of {call}"] = count
    return entries


def restated(kind: str | None, diff: str, final: Final, disturbed: bool) -> tuple[str | None, str]:
    """The verdict as a user can act on it: a scenario a stray thread disturbed cannot be judged, and a run
    left waiting for an answer nobody was asked lost its question (it did not hang)."""
    if disturbed:
        return "not judgeable", (
            "a thread of a life that had ended (or was paused) was still inside the fake world while this "
            "scenario ran, so its end may not be its own; in a real crash that thread would be gone"
        )
    if kind == "hang" and final.status == "waiting":  # nothing left to run: it waits for an answer
        return "lost work", (
            "after the restart the run waits for input, but no InputRequiredEvent reached the stream, so "
            "nobody was asked: the question was lost with the process (ask with ctx.write_event_to_stream "
            "or by returning the InputRequiredEvent from the step that waits, which a resume sends again)"
        )
    return kind, diff
