"""The ``durableflow`` command: start, resume and inspect durable runs from a shell.

Its exit codes, for scripts, are ``EXIT_CODES`` below; ``durableflow --help`` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import importlib
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ._checkpointer import Checkpointer, Record, RunInfo, open_checkpointer
from ._errors import (
    DurableflowError,
    RunExistsError,
    RunLeaseError,
    RunNotFoundError,
    SnapshotError,
    StoreUnavailableError,
    WorkflowCancelledError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from ._events import HumanResponseEvent, InputRequiredEvent
from ._graph import graph_of
from ._handler import WorkflowHandler
from ._snapshot import unframe
from ._workflow import Workflow

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

DEFAULT_STORE = "sqlite:///durableflow.db"


class UsageError(Exception):
    """The command line asks for something that cannot be done: exit 2."""


class RunEnded(Exception):
    """The run ended without a result (failed, cancelled, timed out): exit 1."""

    def __init__(self, run_id: str, store: str, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.run_id, self.store, self.cause = run_id, store, cause


class WaitsForInput(Exception):
    """The run asks for human input and no ``--respond`` answers it: exit 7. Its last checkpoint holds the request."""

    def __init__(self, run_id: str, store: str, request: InputRequiredEvent) -> None:
        super().__init__(f"run {run_id} waits for input")
        self.run_id, self.store, self.request = run_id, store, request


# The one table of exit codes: ``--help`` prints it, and an error of a listed class ends the command with its
# code (the first row whose class matches). A store error raised while a run is driven is the store's, not the run's.
EXIT_CODES: tuple[tuple[int, str, type[BaseException] | None], ...] = (
    (0, "success: the run completed (crashtest: every scenario passed)", None),
    (1, "the run failed, was cancelled or timed out (crashtest: a scenario failed)", RunEnded),
    (2, "usage error: bad arguments or JSON, module or attribute not found, not a Workflow, run id taken", UsageError),
    (3, "run not found", RunNotFoundError),
    (4, "run is leased by another worker", RunLeaseError),
    (5, "stored run cannot be loaded (corrupt, or no longer fits the code)", SnapshotError),
    (6, "store unavailable", StoreUnavailableError),
    (7, "the run waits for input: `durableflow resume RUN_ID --respond JSON` answers it", WaitsForInput),
    (130, "interrupted (Ctrl-C): the run keeps its last checkpoint", KeyboardInterrupt),
)

_EPILOG = "exit codes:\n" + "".join(f"  {code:>3}  {meaning}\n" for code, meaning, _ in EXIT_CODES)


# -- the command line --------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``durableflow`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except (Exception, KeyboardInterrupt) as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        if isinstance(exc, WaitsForInput):
            print(_as_json(exc.request))  # after the run id, where the result would be: what the run asks
        for line in _explain(exc, crashtest=command is _crashtest):
            print(line, file=sys.stderr)
        return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="durableflow",
        description="Start, resume and inspect durable workflow runs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "--store", default=DEFAULT_STORE, metavar="URL",
        help=f"where runs are kept: sqlite:///path, redis://host:port/db or memory:// (default {DEFAULT_STORE})",
    )  # fmt: skip
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, parents=[store], help=summary, description=summary, epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sub.set_defaults(command=handler)
        return sub

    run = add("run", _run, "start a run and wait for it; prints the run id, then the result as JSON")
    run.add_argument("target", metavar="MODULE:Workflow", help="a Workflow subclass or a zero-argument factory")
    run.add_argument("--input", default="{}", metavar="JSON", help="the start event's fields, a JSON object")
    run.add_argument("--run-id", type=_run_id, metavar="ID", help="the new run's id (default: a random one)")
    _add_respond(run)

    resume = add("resume", _resume, "continue a stored run (a completed one just prints its result)")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--workflow",
        metavar="MODULE:Workflow",
        help="the workflow to resume with (default: the one stored with the run)",
    )
    resume.add_argument(
        "--wait", type=_seconds, default=0.0, metavar="SECONDS",
        help="wait this long for another worker's lease to end (default: fail at once)",
    )  # fmt: skip
    _add_respond(resume)

    runs = add("runs", _runs, "list the stored runs, newest first")
    runs.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="show at most N runs (default 20)")

    show = add("show", _show, "a run's metadata and its stored checkpoints, with what each one changed")
    show.add_argument("run_id", metavar="RUN_ID")

    crashtest = commands.add_parser(
        "crashtest", help="kill a run at every crash point, resume it, and check it ends like an uninterrupted one",
        description="Kill a run at every crash point, resume it, and check it ends like an uninterrupted one. "
        "Redis-typed resources are served by fakeredis. Exit 1 when any scenario fails.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    crashtest.set_defaults(command=_crashtest)
    crashtest.add_argument("target", metavar="MODULE:Workflow", help="a Workflow subclass or a zero-argument factory")
    crashtest.add_argument("--input", default="{}", metavar="JSON", help="the start event's fields, a JSON object")
    crashtest.add_argument(
        "--depth", type=int, choices=(1, 2), default=1,
        help="2 also crashes once more during each resume",
    )  # fmt: skip
    crashtest.add_argument(
        "--mode", choices=("inprocess", "kill"), default="inprocess",
        help="raise at the point, or SIGKILL a forked child",
    )  # fmt: skip
    crashtest.add_argument(
        "--store", default="sqlite", metavar="STORE",
        help="an empty store per scenario: sqlite (default), memory, fakeredis or a redis:// URL",
    )  # fmt: skip
    crashtest.add_argument("--seed", type=int, metavar="N", help="seed for sampling (printed; default random)")
    crashtest.add_argument("--max-scenarios", type=_positive_int, metavar="N", help="sample at most N scenarios")
    crashtest.add_argument("--scenario", metavar="ID", help="run only this scenario (a failure's re-run line gives it)")
    crashtest.add_argument(
        "--hang-after", type=_seconds, default=5.0, metavar="SECONDS",
        help="bound on one life of the run",
    )  # fmt: skip
    _add_respond(crashtest)
    crashtest.add_argument("--report", metavar="PATH", help="also write the crash matrix as an HTML page")
    return parser


def _add_respond(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--respond", metavar="JSON",
        help="answer every input request with a HumanResponseEvent of these fields, like '{\"response\": \"yes\"}' "
        "(without it, a run that asks for input exits 7)",
    )  # fmt: skip


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _run_id(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


# -- commands ----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    fields = _input_fields(args.input)
    answer = _answer(args.respond)
    checkpointer = _open_store(args.store)
    try:
        workflow = _load_workflow(args.target, checkpointer)
        start_type = graph_of(type(workflow)).start_type
        try:
            start = start_type.model_validate(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"--input does not fit {start_type.__name__}: {problems}") from None

        def start_run() -> WorkflowHandler:
            try:
                return workflow.run(run_id=args.run_id, start_event=start)
            except RunExistsError as exc:
                raise UsageError(
                    f"run {exc.run_id} already exists; `durableflow resume {exc.run_id}` continues it"
                ) from None

        result = _drive(start_run, args.store, checkpointer, answer)
    finally:
        checkpointer.close()
    print(_as_json(result))
    return 0


def _resume(args: argparse.Namespace) -> int:
    answer = _answer(args.respond)
    checkpointer = _open_store(args.store, must_exist=args.run_id)
    try:
        target = args.workflow or checkpointer.info(args.run_id).workflow
        try:
            workflow = _load_workflow(target, checkpointer)
        except UsageError as exc:
            if args.workflow:
                raise
            raise UsageError(
                f"{exc}\n(that is the workflow stored with the run; --workflow MODULE:Workflow picks another)"
            ) from None
        result = _drive(lambda: workflow.resume(args.run_id, wait=args.wait), args.store, checkpointer, answer)
    finally:
        checkpointer.close()
    print(_as_json(result))
    return 0


def _runs(args: argparse.Namespace) -> int:
    console = _console()
    if _sqlite_file_missing(args.store):
        console.print(f"no runs in {args.store}: the file does not exist yet", highlight=False)
        return 0
    checkpointer = _open_store(args.store)
    try:
        runs = checkpointer.runs(args.limit)
    finally:
        checkpointer.close()
    if not runs:
        console.print(f"no runs in {args.store}", highlight=False)
        return 0
    from rich.text import Text

    table = _table("run", "workflow", "status", "created", "updated", "last seq", "result or error")
    table.columns[0].min_width = max(len(info.run_id) for info in runs)  # the one thing a reader copies
    for column in (0, 2, 3, 4):
        table.columns[column].no_wrap = True
    for info in runs:
        outcome = Text(_clip(info.error, 60), style="red") if info.error else Text(_clip(info.result or "", 60))
        table.add_row(
            info.run_id, Text(info.workflow), Text(info.status, style=_STATUS_STYLES.get(info.status, "")),
            _when(info.created_at, compact=True), _when(info.updated_at, compact=True), str(info.last_seq), outcome,
        )  # fmt: skip
    console.print(table)
    return 0


def _show(args: argparse.Namespace) -> int:
    console = _console()
    checkpointer = _open_store(args.store, must_exist=args.run_id)
    try:
        info = checkpointer.info(args.run_id)
        records = checkpointer.load(args.run_id)
    finally:
        checkpointer.close()
    from rich.text import Text

    console.print(_about(info))
    if records and records[0].seq > 1:
        console.print(f"(records before {records[0].seq} were folded into the full snapshot {records[0].seq})")
    table = _table("seq", "kind", "at", "what changed")
    broken = 0
    for seq, kind, at, changes, ok in _record_rows(args.run_id, records):
        broken += not ok
        table.add_row(seq, kind, Text(at), Text(changes, style="" if ok else "red"))
    console.print(table)
    if broken:
        raise SnapshotError(
            f"{broken} stored record(s) of run {args.run_id} cannot be decoded, so it cannot be resumed"
        )
    return 0


def _crashtest(args: argparse.Namespace) -> int:
    """The same exploration as the ``crash_harness`` fixture, with a progress bar and the matrix printed."""
    from pytest_durableflow._harness import explore

    fields = _input_fields(args.input)
    factory = _workflow_factory(args.target)
    store = args.store
    if store.startswith(("sqlite:", "memory:")):
        raise UsageError(
            f"--store {store}: crashtest gives every scenario an empty store of its own, so it takes a kind "
            "(sqlite, memory, fakeredis) or a redis:// URL, not a path"
        )
    answer = _answer(args.respond)
    respond = None
    if answer is not None:
        respond = lambda request: HumanResponseEvent(**answer)  # noqa: E731 - the same answer to every request
    console = _console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"crashing {args.target}", total=None)

        def advance(outcome: Any, planned: int) -> None:
            progress.update(task, advance=1, total=planned)

        try:
            report = explore(
                factory, fields, depth=args.depth, mode=args.mode, seed=args.seed, max_scenarios=args.max_scenarios,
                store=store, only=args.scenario, hang_after=args.hang_after, on_scenario=advance, respond=respond,
            )  # fmt: skip
        except (ValidationError, ValueError) as exc:
            raise UsageError(f"cannot explore {args.target}: {exc}") from None
        except AssertionError as exc:  # the uninterrupted reference run did not finish
            if "did not finish (input)" in str(exc):  # it asked for input: the harness's words for that ending
                return _fail(
                    _code_of(WaitsForInput), str(exc), "answer its requests with --respond JSON, like --respond "
                    + shlex.quote('{"response": "yes"}'),
                )  # fmt: skip
            return _fail(1, str(exc))
    for outcome in report.failures:
        outcome.rerun = _rerun_line(args, outcome.id)
    _print_matrix(console, report)
    if args.report:
        from pytest_durableflow._html import write_html
        from pytest_durableflow._report import summary_of

        write_html([summary_of(f"durableflow crashtest {args.target}", report)], args.report)
        console.print(f"crash matrix written to {args.report}")
    return 0 if report.ok else 1


def _rerun_line(args: argparse.Namespace, scenario: str) -> str:
    """The command that replays just ``scenario`` as this one ran it, quoted for a POSIX shell."""
    argv = ["durableflow", "crashtest", args.target, "--input", args.input]
    if args.respond is not None:
        argv += ["--respond", args.respond]
    if ">" in scenario:
        argv += ["--depth", "2"]  # kill mode reaches a crash during the resume only when exploring depth 2
    argv += ["--mode", args.mode, "--store", args.store, "--hang-after", str(args.hang_after), "--scenario", scenario]
    return shlex.join(argv)


def _print_matrix(console: Console, report: Any) -> None:
    """One row per first crash point: its outcome, and at depth 2 how the crashes during its resume ended."""
    from rich.text import Text

    rows: dict[str, list[Any]] = {}
    for outcome in report.scenarios:
        rows.setdefault(outcome.id.partition(">")[0], []).append(outcome)
    table = _table("crash point", "outcome", *(["crashes during the resume"] if report.depth == 2 else []))
    for point, outcomes in rows.items():
        alone = next((o for o in outcomes if ">" not in o.id), None)
        cells = [Text(point), _verdict(alone)]
        if report.depth == 2:
            nested = [o for o in outcomes if ">" in o.id]
            failed = [o for o in nested if not o.ok]
            kinds = ", ".join(sorted({o.kind for o in failed if o.kind}))
            cells.append(
                Text(
                    f"{len(nested) - len(failed)} passed" + (f", {len(failed)} failed: {kinds}" if failed else ""),
                    style="red" if failed else "green",
                )
            )
        table.add_row(*cells)
    console.print(table)
    for outcome in report.failures:
        console.print(Text(f"\n{outcome.id}: {outcome.kind}", style="bold red"))
        console.print(Text(outcome.diff))
        console.print(Text(f"re-run: {outcome.rerun}", style="dim"), soft_wrap=True)  # one line, to copy whole
    console.print(Text(report.summary(), style="bold " + ("green" if report.ok else "red")))


def _verdict(outcome: Any) -> Any:
    from rich.text import Text

    if outcome is None:
        return Text("-")
    return Text("passed", style="green") if outcome.ok else Text(str(outcome.kind), style="red")


# -- running -----------------------------------------------------------------------------


def _input_fields(text: str, option: str = "--input") -> dict[str, Any]:
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise UsageError(f"{option} must be a JSON object of event fields, like '{{\"ids\": [1, 2]}}', not {text!r}")
    return fields


def _load_workflow(target: str, checkpointer: Checkpointer) -> Workflow:
    """A fresh workflow instance from ``MODULE:Workflow``, storing its runs in ``checkpointer``."""
    workflow = _workflow_factory(target)()
    workflow.checkpointer = checkpointer
    return workflow


def _workflow_factory(target: str) -> Callable[[], Workflow]:
    """What ``MODULE:Workflow`` names, checked to build a valid workflow: a class or a zero-argument factory."""
    module_name, _, qualname = target.partition(":")
    if not module_name or not qualname:
        raise UsageError(f"{target!r} is not MODULE:Workflow (for example pipelines:DocumentPipeline)")
    cwd = os.getcwd()
    if sys.path[:1] not in ([cwd], [""]):  # a console script starts with its own directory there, not the cwd
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} (from {cwd}): {exc}") from None
    except Exception as exc:
        traceback.print_exc()  # the user's own module is broken: its traceback is what they need
        raise UsageError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise UsageError(f"module {module_name!r} has no attribute {qualname!r}")
    if isinstance(found, Workflow):
        raise UsageError(f"{target} is a Workflow instance; name its class or a zero-argument factory instead")
    if (isinstance(found, type) and not issubclass(found, Workflow)) or not callable(found):
        raise UsageError(f"{target} is not a Workflow subclass or a factory of one")
    try:
        workflow = found()
    except TypeError as exc:
        raise UsageError(f"{target}() needs arguments the command line cannot give: {exc}") from None
    if not isinstance(workflow, Workflow):
        raise UsageError(f"{target}() returned a {type(workflow).__name__}, not a Workflow")
    try:
        type(workflow).validate()
    except WorkflowValidationError as exc:
        raise UsageError(f"{target} is not a valid workflow: {exc}") from None
    return found  # type: ignore[no-any-return]


def _answer(respond: str | None) -> dict[str, Any] | None:
    """The fields of the ``HumanResponseEvent`` that ``--respond`` gives every input request, checked now."""
    if respond is None:
        return None
    fields = _input_fields(respond, "--respond")
    try:
        HumanResponseEvent(**fields)
    except ValidationError as exc:
        raise UsageError(f"--respond does not make a HumanResponseEvent: {exc}") from None
    return fields


def _drive(
    start: Callable[[], WorkflowHandler], store: str, checkpointer: Checkpointer, answer: dict[str, Any] | None
) -> Any:
    """Start (or resume) a run, print its id at once so a killed run can be resumed, and wait for its result,
    answering each input request with ``answer``; with none, stop at the first request (``WaitsForInput``)."""
    owner: str | None = None

    async def drive() -> Any:
        nonlocal owner
        handler = start()
        print(handler.run_id, flush=True)
        requests = asyncio.ensure_future(_unanswered_request(handler, answer))
        ended = asyncio.ensure_future(handler)
        for task in (requests, ended):
            task.add_done_callback(_retrieved)  # the one that loses the race may hold the run's error too
        try:
            # Both, because a resume that gave up waiting for a lease fails the handler but never ends its stream.
            await asyncio.wait((requests, ended), return_when=asyncio.FIRST_COMPLETED)
            request = requests.result() if requests.done() else None
            if request is not None:
                owner = checkpointer.info(handler.run_id).lease_owner  # this engine's, while it drives the run
                raise WaitsForInput(handler.run_id, store, request)
            return await ended
        except Exception as exc:
            if _exit_code(exc) is not None:
                raise  # the store or the lease failed, not the run; or the run waits for input
            raise RunEnded(handler.run_id, store, exc) from exc
        finally:
            requests.cancel()

    try:
        return asyncio.run(drive())
    except WaitsForInput as waiting:
        # The engine stopped with the loop and wrote nothing more; give its lease up so that a resume, from this
        # process or another host, need not wait for it to expire.
        if owner is not None:
            with contextlib.suppress(DurableflowError):
                checkpointer.release(waiting.run_id, owner)
        raise


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


def _open_store(url: str, must_exist: str | None = None) -> Checkpointer:
    """The store at ``url``; with ``must_exist`` (a run id), a missing SQLite file is a missing run, not a new file."""
    if must_exist is not None and _sqlite_file_missing(url):
        raise RunNotFoundError(must_exist, url)
    try:
        return open_checkpointer(url)
    except (ValueError, ImportError) as exc:  # an unknown scheme, or redis-py is not installed
        raise UsageError(str(exc)) from None


def _sqlite_file_missing(url: str) -> bool:
    return url.startswith("sqlite:///") and not os.path.exists(url[len("sqlite:///") :])


# -- output ------------------------------------------------------------------------------

_STATUS_STYLES = {"completed": "green", "failed": "red", "cancelled": "red", "running": "yellow", "waiting": "cyan"}


def _console() -> Console:
    """Where tables go; rich is imported only here and below, so ``--help`` needs only the core dependencies."""
    try:
        from rich.console import Console
    except ImportError:
        raise UsageError("tables need rich: install durableflow[cli] (pip install 'durableflow[cli]')") from None
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped into grep or a file: a table cropped to 80 columns helps nobody
    return console


def _table(*headers: str) -> Table:
    from rich import box
    from rich.table import Table

    return Table(*headers, box=box.SIMPLE_HEAD, header_style="bold")


def _about(info: RunInfo) -> Table:
    """The run's metadata as a two-column grid."""
    from rich.table import Table
    from rich.text import Text

    about = Table.grid(padding=(0, 2))
    about.add_row("run", info.run_id)
    about.add_row("workflow", Text(info.workflow))
    about.add_row("status", Text(info.status, style=_STATUS_STYLES.get(info.status, "")))
    about.add_row("created", _when(info.created_at))
    about.add_row("updated", _when(info.updated_at))
    about.add_row("last seq", str(info.last_seq))
    if info.lease_owner:
        about.add_row("leased by", Text(f"{info.lease_owner} until {_when(info.lease_expires_at)}"))
    if info.result is not None:
        about.add_row("result", Text(_clip(info.result, 400)))
    if info.error:
        about.add_row("error", Text(info.error, style="red"))
    return about


def _record_rows(run_id: str, records: Sequence[Record]) -> Iterator[tuple[str, str, str, str, bool]]:
    """One row per stored record: seq, kind, at, what changed, and whether it decoded."""
    pending: set[str] = set()
    for record in records:
        kind = "full" if record.full else "delta"
        try:
            doc = unframe(record.data, run_id, record.seq)
            changes = _changes(doc, pending)
        except SnapshotError as exc:
            yield str(record.seq), kind, "", f"error: {exc}", False
            continue
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # well framed, yet not what the engine writes
            yield str(record.seq), kind, "", f"error: malformed record ({type(exc).__name__}: {exc})", False
            continue
        yield str(record.seq), doc["kind"], doc["at"], changes, True


def _changes(doc: dict[str, Any], pending: set[str]) -> str:
    """What one record holds (a full snapshot) or changed (a delta); updates ``pending`` deliveries.

    A delta names the run's status and error only when they changed."""
    full = doc["kind"] == "full"
    parts = []
    if "status" in doc:
        parts.append(f"status {doc['status']}")
    if doc.get("error"):
        parts.append(f"error {doc['error']['type']}: {doc['error']['message']}")
    if doc.get("state"):
        parts.append(("state " if full else "state set ") + _names(doc["state"]))
    if doc.get("state_del"):
        parts.append("state deleted " + _names(doc["state_del"]))
    if doc.get("events"):
        events = [f"{eid} {record[0].rpartition('.')[2]}" for eid, record in doc["events"].items()]
        parts.append(("events " if full else "events added ") + _names(events))
    if doc.get("events_del"):
        parts.append("events consumed " + _names(str(eid) for eid in doc["events_del"]))
    deliveries = list(doc.get("deliveries", {}))
    if full:
        pending.clear()
    added = [key for key in deliveries if key not in pending]
    updated = [key for key in deliveries if key in pending]
    finished = list(doc.get("deliveries_del", ()))
    pending.update(added)
    pending.difference_update(finished)
    for label, keys in (("pending" if full else "deliveries added", added), ("deliveries updated", updated)):
        if keys:
            parts.append(f"{label} " + _names(_delivery(key) for key in keys))
    if finished:
        parts.append("deliveries finished " + _names(_delivery(key) for key in finished))
    if doc.get("buffers"):
        parts.append("buffers " + _names(doc["buffers"]))
    if doc.get("effects"):
        parts.append(("effects " if full else "effects recorded ") + _names(doc["effects"]))
    if "awaiting" in doc and (doc["awaiting"] or not full):
        parts.append("awaiting input " + (_names(str(eid) for eid in doc["awaiting"]) or "none"))
    if doc.get("result") is not None:
        key, data = doc["result"]
        parts.append("result " + _clip(json.dumps(data.get("result") if key == "StopEvent" else data), 80))
    return "; ".join(parts) or "nothing"


def _delivery(key: str) -> str:
    eid, _, step = key.partition(":")
    return f"{step}<-{eid}"


def _names(items: Any, most: int = 8) -> str:
    names = [str(item) for item in items]
    more = f" (+{len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(timestamp: float | None, compact: bool = False) -> str:
    """Local time; ``compact`` gives only the time for today, and drops the seconds otherwise."""
    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp)
    if not compact:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.strftime("%H:%M:%S" if moment.date() == datetime.date.today() else "%Y-%m-%d %H:%M")


def _as_json(value: Any) -> str:
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


# -- errors ------------------------------------------------------------------------------


def _exit_code(exc: BaseException) -> int | None:
    return next((code for code, _, cls in EXIT_CODES if cls is not None and isinstance(exc, cls)), None)


def _code_of(error: type[BaseException]) -> int:
    return next(code for code, _, cls in EXIT_CODES if cls is error)


def _explain(exc: BaseException, crashtest: bool = False) -> list[str]:
    """What to tell on stderr when ``exc`` ends the command: what happened, then what to do about it."""
    if isinstance(exc, WaitsForInput):
        if exc.store.startswith("memory://"):
            return [
                f"run {exc.run_id} waits for input, and a memory:// store keeps it only in this process;",
                "answer in the same command with --respond JSON, like --respond " + shlex.quote('{"response": ...}'),
            ]
        return [
            f"run {exc.run_id} waits for input; answer it with:",
            f"  durableflow resume {exc.run_id}{_store_option(exc.store)} --respond "
            + shlex.quote('{"response": ...}'),
        ]
    if isinstance(exc, RunEnded):
        return [f"error: run {exc.run_id} {_ending(exc.cause)}", *_resume_hint(exc)]
    if isinstance(exc, KeyboardInterrupt):
        if crashtest:
            return ["error: interrupted"]
        return ["error: interrupted: the run keeps its last checkpoint; `durableflow resume RUN_ID` continues it"]
    if isinstance(exc, RunLeaseError) and exc.holder:
        return [
            f"error: run {exc.run_id} is leased by worker {exc.holder} until {_when(exc.expires_at)}; "
            "try again later, or pass --wait SECONDS"
        ]
    return [f"error: {exc}"]


def _ending(cause: BaseException) -> str:
    if isinstance(cause, WorkflowTimeoutError):
        return f"timed out: {cause}"
    if isinstance(cause, WorkflowCancelledError):
        return f"was cancelled: {cause}"
    return f"failed: {type(cause).__name__}: {cause}"


def _resume_hint(exc: RunEnded) -> list[str]:
    if isinstance(exc.cause, WorkflowTimeoutError) or exc.store.startswith("memory://"):
        return []  # past its deadline a resume only times out again; a memory store died with this process
    return [
        f"its last checkpoint is kept: fix the cause, then `durableflow resume {exc.run_id}{_store_option(exc.store)}`"
    ]


def _store_option(store: str) -> str:
    return "" if store == DEFAULT_STORE else f" --store {shlex.quote(store)}"


def _fail(code: int, message: str, hint: str | None = None) -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(hint, file=sys.stderr)
    return code
