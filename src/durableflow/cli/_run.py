"""``durableflow run`` and ``durableflow resume``: drive one run to its end, answering its input requests."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .. import _idle
from .._checkpointer import Checkpointer, RunInfo
from .._errors import DurableflowError, RunExistsError, SerializationError, SnapshotError
from .._events import HumanResponseEvent, InputRequiredEvent
from .._graph import graph_of
from .._handler import WorkflowHandler
from .._integrity import check_info
from .._serialization import MAX_DEPTH, json_depth
from .._waiters import matches
from ._exits import Interrupted, RunEnded, RunIdle, UsageError, WaitsForInput, exit_code, store_note, store_option
from ._options import add_command, add_respond, answer, input_fields, open_store, run_id, seconds, stored_run_id
from ._output import as_json, clip, printable
from ._workflows import WorkflowRegistry, add_workflow_options, resolve_target


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = add_command(
        commands, "run", run_command, "start a run and wait for it; prints the run id, then the result as JSON"
    )
    run.add_argument(
        "target", metavar="MODULE:Workflow",
        help="a Workflow subclass or a zero-argument factory, or the name of one the config lists",
    )  # fmt: skip
    run.add_argument("--input", default="{}", metavar="JSON", help="the start event's fields, a JSON object")
    run.add_argument("--run-id", type=run_id, metavar="ID", help="the new run's id (default: a random one)")
    add_workflow_options(run, repeatable_workflow=False)
    add_respond(run)

    resume = add_command(
        commands,
        "resume",
        resume_command,
        "continue a stored run (a completed one just prints its stored result, and needs no workflow named)",
    )
    resume.add_argument("run_id", type=stored_run_id, metavar="RUN_ID")
    add_workflow_options(resume)
    resume.add_argument(
        "--wait", type=seconds, default=0.0, metavar="SECONDS",
        help="wait this long for another worker's lease to end (default: fail at once)",
    )  # fmt: skip
    add_respond(resume)


def run_command(args: argparse.Namespace) -> int:
    fields = input_fields(args.input)
    response = answer(args.respond)
    target = resolve_target(args.target, args.paths)
    again = _workflow_options([target.spec] if ":" in args.target else [], args.paths)
    checkpointer = open_store(args.store)
    try:
        workflow = target.factory()
        workflow.checkpointer = checkpointer
        start_type = graph_of(type(workflow)).start_type
        try:
            start = start_type(**fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"--input does not fit {start_type.__name__}: {problems}") from None

        def start_run() -> WorkflowHandler:
            return workflow.run(run_id=args.run_id, start_event=start)

        result = drive(start_run, args.store, checkpointer, response, again)
    finally:
        checkpointer.close()
    print(as_json(result))
    return 0


def resume_command(args: argparse.Namespace) -> int:
    response = answer(args.respond)
    checkpointer = open_store(args.store, must_exist=args.run_id)
    try:
        info = check_info(checkpointer.info(args.run_id), args.run_id)
        if info.status == "completed":  # its result is stored as data: no workflow is needed, none is imported
            result = _stored_result(info)
            print(printable(info.run_id))  # as a resume that drives the run prints it
            print(as_json(result))
            return 0
        target = WorkflowRegistry.from_args(args).for_run(args.run_id, info.workflow)
        workflow = target.factory()
        workflow.checkpointer = checkpointer
        again = _workflow_options(args.workflows, args.paths)
        result = drive(lambda: workflow.resume(args.run_id, wait=args.wait), args.store, checkpointer, response, again)
    finally:
        checkpointer.close()
    print(as_json(result))
    return 0


def _stored_result(info: RunInfo) -> Any:
    """A completed run's result as its metadata holds it: JSON text, read as plain data."""
    text = info.result
    try:
        if text is None or json_depth(text) > MAX_DEPTH:
            raise ValueError
        return json.loads(text)
    except (ValueError, RecursionError):
        raise SnapshotError(
            f"malformed metadata: the completed run's result {clip(repr(text), 60)} is not JSON", run_id=info.run_id
        ) from None


def _workflow_options(workflows: list[str], paths: list[str]) -> str:
    """The options that name the same workflows again, for a suggested ``durableflow resume``."""
    options = [f" --workflow {shlex.quote(spec)}" for spec in workflows]
    options += [f" --path {shlex.quote(path)}" for path in paths]
    return "".join(options)


def drive(
    start: Callable[[], WorkflowHandler],
    store: str,
    checkpointer: Checkpointer,
    answer: dict[str, Any] | None,
    again: str = "",
) -> Any:
    """Start (or resume) a run, print its id at once so a killed run can be resumed, and wait for its result,
    answering each input request with ``answer``; with none, stop at the first request (``WaitsForInput``)."""
    owner: str | None = None
    stored: str | None = None  # the run's id once it is stored: from then on Ctrl-C leaves a run to resume

    async def drive() -> Any:
        nonlocal owner, stored
        try:
            handler = start()
            await handler.claimed()  # a taken run id, or a run another worker drives, is told before the run id
        except RunExistsError as exc:
            raise UsageError(
                f"run {exc.run_id} already exists; "
                f"`durableflow resume {shlex.quote(exc.run_id)}{again}{store_option(store)}` continues it"
                + store_note(store)
            ) from None
        print(printable(handler.run_id), flush=True)
        stored = handler.run_id
        requests = asyncio.ensure_future(_unanswered_request(handler, answer))
        ended = asyncio.ensure_future(handler)
        for task in (requests, ended):
            task.add_done_callback(_retrieved)  # the one that loses the race may hold the run's error too
        try:
            # Both, because a resume that gave up waiting for a lease fails the handler but never ends its stream.
            await _until_ended_asked_or_idle(handler, requests, ended, answer)
            runner = handler._runner
            if not (requests.done() or ended.done()) and runner is not None:  # idle: nothing will come
                info = checkpointer.info(handler.run_id)
                owner = info.lease_owner
                waits = [(w.step, w.event_type.__name__, _detail(w, runner.loop.time())) for w in _idle.waits(runner)]
                status = "interrupted" if info.status == "running" else info.status
                raise RunIdle(handler.run_id, store, type(runner.workflow).__name__, waits, status, again)
            request = requests.result() if requests.done() else None
            if request is not None:
                info = checkpointer.info(handler.run_id)
                owner = info.lease_owner  # this engine's, while it drives the run
                # still running: a step waits in ctx.wait_for_event, and the run is in flight, not parked
                raise WaitsForInput(handler.run_id, store, request, again, in_step=info.status == "running")
            return await ended
        except Exception as exc:
            if exit_code(exc) is not None and not isinstance(exc, SerializationError):
                raise  # the store or the lease failed, not the run; or the run waits for input
            raise RunEnded(handler.run_id, store, exc, again) from exc
        finally:
            requests.cancel()

    try:
        return asyncio.run(drive())
    except KeyboardInterrupt:
        if stored is None:
            raise
        raise Interrupted(stored, store, again) from None
    except (WaitsForInput, RunIdle) as waiting:
        # The engine stopped with the loop and wrote nothing more; give its lease up so that a resume, from this
        # process or another host, need not wait for it to expire.
        if owner is not None:
            with contextlib.suppress(DurableflowError):
                checkpointer.release(waiting.run_id, owner)
        raise


async def _until_ended_asked_or_idle(
    handler: WorkflowHandler, requests: asyncio.Future[Any], ended: asyncio.Future[Any], answer: dict[str, Any] | None
) -> None:
    """Wait until the run ends, asks what ``answer`` does not answer, or is idle (``_idle``): then it stops
    waiting for anything, and without this the command would wait for ever."""
    runner = handler._runner
    if runner is None:  # the run had ended, or never started here
        await asyncio.wait((requests, ended), return_when=FIRST)
        return
    while True:
        idle = _idle.watch(runner)
        await asyncio.wait((requests, ended, idle), return_when=FIRST)
        if requests.done() or ended.done():
            return
        if not _idle.idle(runner):
            continue  # an answer came meanwhile
        if any(isinstance(event, InputRequiredEvent) for event in runner.stream):
            await asyncio.sleep(0)  # the run asks: ``requests`` reads its request on this turn
            continue
        response = None if answer is None else HumanResponseEvent(**answer)
        waits = _idle.waits(runner)
        if response is None or not any(matches(response, w.event_type, w.requirements) for w in waits):
            return
        handler.send_event(response)  # a step waits for a HumanResponseEvent without asking: --respond answers it


FIRST = asyncio.FIRST_COMPLETED


def _detail(wait: _idle.Wait, now: float) -> str:
    """What a wait requires of the event, and when it times out."""
    text = ""
    if wait.requirements:
        text = " with " + ", ".join(f"{key}={value!r}" for key, value in wait.requirements.items())
    if wait.deadline is not None:
        return f"{text} (ctx.wait_for_event; it times out in {max(0, wait.deadline - now):.0f} s, failing the step)"
    return f"{text} (ctx.wait_for_event)"


async def _unanswered_request(handler: WorkflowHandler, answer: dict[str, Any] | None) -> InputRequiredEvent | None:
    """Send ``answer`` to every input request the run makes, re-sent ones after a resume included;
    without an answer, the first request. ``None`` once the run has ended."""
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            if answer is None:
                return event
            handler.send_event(HumanResponseEvent(**answer))
    return None


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
