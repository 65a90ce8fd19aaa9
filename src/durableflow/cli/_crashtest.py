"""``durableflow crashtest``: the crash exploration the ``crash_harness`` fixture runs, with a progress bar,
the crash matrix printed and a re-run line for every failing scenario."""

from __future__ import annotations

import argparse
import random
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .._checkpointer import without_password
from .._errors import StoreUnavailableError, password_note
from .._events import HumanResponseEvent
from ..testing._settings import DOWNTIME, fixed_hash_seed
from ._exits import UsageError, WaitsForInput, code_of, fail
from ._options import add_command, add_respond, answer, input_fields, positive_int, seconds
from ._output import cell, console, printable, table
from ._workflows import add_workflow_options, resolve_target

if TYPE_CHECKING:
    from rich.console import Console


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crashtest = add_command(
        commands, "crashtest", crashtest_command,
        "kill a run at every crash point, resume it, and check it ends like an uninterrupted one",
        store=False,
        description="Kill a run at every crash point, resume it, and check it ends like an uninterrupted one. "
        "Redis-typed resources are served by fakeredis. Exit 1 when any scenario fails.",
    )  # fmt: skip
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
    crashtest.add_argument(
        "--seed", type=int, metavar="N",
        help="seed for sampling and, in kill mode, the lives' hash seeds (printed; default random)",
    )  # fmt: skip
    crashtest.add_argument(
        "--downtime", type=seconds, default=DOWNTIME, metavar="SECONDS",
        help=f"how much later than its crash each resume starts, on the frozen clock (default {DOWNTIME:g})",
    )  # fmt: skip
    crashtest.add_argument("--max-scenarios", type=positive_int, metavar="N", help="sample at most N scenarios")
    crashtest.add_argument("--scenario", metavar="ID", help="run only this scenario (a failure's re-run line gives it)")
    crashtest.add_argument(
        "--hang-after", type=seconds, default=5.0, metavar="SECONDS",
        help="bound on one life of the run",
    )  # fmt: skip
    add_workflow_options(crashtest, repeatable_workflow=False)
    add_respond(crashtest)
    crashtest.add_argument("--report", metavar="PATH", help="also write the crash matrix as an HTML page")


def crashtest_command(args: argparse.Namespace) -> int:
    """The same exploration as the ``crash_harness`` fixture, with a progress bar and the matrix printed."""
    with _one_interrupt():
        return _crashtest(args)


def _crashtest(args: argparse.Namespace) -> int:
    from ..testing import explore  # here, not at the top: every other command would pay for importing it
    from ..testing._lives import ReferenceUnfinished

    fields = input_fields(args.input)
    out = console()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    try:
        factory = resolve_target(args.target, args.paths).factory
    except KeyboardInterrupt:  # while the user's module is imported
        return _reported(args, out, _before_any_scenario(args, seed), seed)
    store = args.store
    if store.startswith(("sqlite:", "memory:")):
        raise UsageError(
            f"--store {store}: crashtest gives every scenario an empty store of its own, so it takes a kind "
            "(sqlite, memory, fakeredis) or a redis:// URL, not a path"
        )
    response = answer(args.respond)
    respond = None
    if response is not None:
        respond = lambda request: HumanResponseEvent(**response)  # noqa: E731 - the same answer to every request
    options: dict[str, Any] = {
        "depth": args.depth, "mode": args.mode, "seed": seed, "hash_seed": seed, "max_scenarios": args.max_scenarios,
        "store": store, "only": args.scenario, "hang_after": args.hang_after, "respond": respond,
        "downtime": args.downtime, "keep_partial": True,
    }  # fmt: skip
    with _progress(out, args.target) as advance:
        try:
            report = explore(factory, fields, on_scenario=advance, **options)
        except (ValidationError, ValueError) as exc:
            raise UsageError(f"cannot explore {args.target}: {exc}") from None
        except ReferenceUnfinished as exc:  # told with this command's options, not the API's
            if exc.ending == "input":
                return fail(
                    code_of(WaitsForInput), exc.what, "answer its requests with --respond JSON, like --respond "
                    + shlex.quote('{"response": "yes"}'),
                )  # fmt: skip
            if exc.ending == "hang":
                return fail(1, exc.what, HANG_ADVICE)
            return fail(1, exc.what)
        except AssertionError as exc:  # the reference run ended failed: nothing to judge by
            return fail(1, str(exc))
        except StoreUnavailableError as exc:
            return fail(code_of(StoreUnavailableError), _in_cli_words(str(exc)))
        except KeyboardInterrupt:  # before the exploration had a report: its world and clock were being set up
            report = _before_any_scenario(args, seed)
    return _reported(args, out, report, seed)


@contextmanager
def _one_interrupt() -> Iterator[None]:
    """The first Ctrl-C stops the exploration; those after it are ignored: the command cleans up (its lives
    stopped, what it wrote to a real Redis deleted), prints what ran and exits (closing its second
    interpreters), which a second would cut short or turn into a traceback. Where SIGINT was not Python's
    default (ignored, or a handler of the caller's), it is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return
    pressed = False

    def first(signum: int, frame: Any) -> None:
        nonlocal pressed
        pressed = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        if not pressed:  # once pressed, the process only exits: ignored until it has
            signal.signal(signal.SIGINT, previous)


def _before_any_scenario(args: argparse.Namespace, seed: int) -> Any:
    """The report of an exploration Ctrl-C stopped before it began: its summary says that no scenario ran."""
    from ..testing import Report

    return Report(args.target.rpartition(":")[2], args.mode, args.depth, seed, interrupted=True)


def _reported(args: argparse.Namespace, out: Console, report: Any, seed: int) -> int:
    """Print ``report`` (and write its page): exit 0, 1 when a scenario failed, 130 when Ctrl-C stopped it."""
    args.seed = seed
    for outcome in report.failures:
        outcome.rerun = _rerun_line(args, outcome.id)
    _print_matrix(out, report)
    note = password_note(without_password(args.store), alone=True)
    if report.failures and note:  # under the re-run lines, each printed to be copied whole
        out.print(cell(f"re-run lines: {note}", "dim"))
    if args.report:
        from ..testing import summary_of, write_html

        write_html([summary_of(f"durableflow crashtest {args.target}", report)], args.report)
        out.print(f"crash matrix written to {args.report}")
    if report.interrupted:
        return 130
    return 0 if report.ok else 1


HANG_ADVICE = (
    "a step that waits with asyncio.sleep (or any real wait) should await ctx.sleep(...), which is durable and "
    "which the harness's frozen clock skips; or raise the bound with --hang-after SECONDS"
)


def _in_cli_words(message: str) -> str:
    """An error of the exploration API, its advice naming this command's option instead of the keyword."""
    from ..testing._stores import SQLITE_INSTEAD

    return message.replace(SQLITE_INSTEAD, "pass --store sqlite")


@contextmanager
def _progress(out: Console, target: str) -> Iterator[Callable[[Any, int], None]]:
    """A progress bar on a terminal; elsewhere (CI logs, a pipe) a plain line every two seconds."""
    if out.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=out, transient=True) as progress:
            task = progress.add_task(f"crashing {target}", total=None)
            yield lambda outcome, planned: progress.update(task, advance=1, total=planned)
        return
    done = failed = 0
    last = time.monotonic()

    def line(outcome: Any, planned: int) -> None:
        nonlocal done, failed, last
        done += 1
        failed += not outcome.ok
        if time.monotonic() - last >= 2.0:
            last = time.monotonic()
            # "so far": each resume's crash points, and the zombie scenarios, join the plan as it goes
            print(
                f"crashing {target}: {done} scenario{'' if done == 1 else 's'} judged ({failed} failed) "
                f"of {planned} planned so far",
                file=sys.stderr, flush=True,
            )  # fmt: skip

    yield line


def _rerun_line(args: argparse.Namespace, scenario: str) -> str:
    """The command that replays just ``scenario`` as this one ran it, quoted for a POSIX shell."""
    argv = ["durableflow", "crashtest", args.target, "--input", args.input]
    if args.respond is not None:
        argv += ["--respond", args.respond]
    if ">" in scenario:
        argv += ["--depth", "2"]  # kill mode reaches a crash during the resume only when exploring depth 2
    for path in args.paths:
        argv += ["--path", path]
    argv += ["--mode", args.mode, "--store", without_password(args.store), "--hang-after", str(args.hang_after)]
    if args.downtime != DOWNTIME:
        argv += ["--downtime", str(args.downtime)]
    if args.mode == "kill":
        argv += ["--seed", str(args.seed)]  # the hash seeds its lives ran under
    argv += ["--scenario", scenario]
    if args.mode == "kill" and (seed := fixed_hash_seed()):  # the lives that die were forked from this process
        return f"PYTHONHASHSEED={seed} {shlex.join(argv)}"
    return shlex.join(argv)


def _print_matrix(out: Console, report: Any) -> None:
    """One row per first crash point: its outcome, and at depth 2 how the crashes during its resume ended."""
    from rich.text import Text

    from ..testing._report import SHOWN, in_shown_order, kind_lines

    rows: dict[str, list[Any]] = {}
    for outcome in report.scenarios:
        rows.setdefault(outcome.id.partition(">")[0], []).append(outcome)
    matrix = table("crash point", "outcome", *(["crashes during the resume"] if report.depth == 2 else []))
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
        matrix.add_row(*cells)
    if rows:  # none when Ctrl-C came before the first scenario
        out.print(matrix)
    failures = in_shown_order(report.failures)
    for outcome in failures[:SHOWN]:  # as many diffs as the pytest report shows
        out.print(Text(f"\n{outcome.id}: {outcome.kind}", style="bold red"))
        out.print(Text(printable(outcome.diff, newlines=True)))
        out.print(Text(f"re-run: {outcome.rerun}", style="dim"), soft_wrap=True)  # one line, to copy whole
    if len(failures) > SHOWN:
        rest = ", ".join(o.id for o in failures[SHOWN : SHOWN + 20]) + (" ..." if len(failures) > SHOWN + 20 else "")
        out.print(
            Text(f"\n... and {len(failures) - SHOWN} more failing scenarios (re-run one with --scenario ID): {rest}")
        )
    if failures:
        out.print(Text("\n" + "\n".join(kind_lines(failures))))
    out.print(Text(report.summary(), style="bold " + ("green" if report.ok else "red")))


def _verdict(outcome: Any) -> Any:
    from rich.text import Text

    if outcome is None:
        return Text("-")
    return Text("passed", style="green") if outcome.ok else Text(str(outcome.kind), style="red")
