"""Atomicity under a kill: a forked child SIGKILLed at every line of ``append`` leaves before or after."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

import pytest

from durableflow import Append, Checkpointer, GroupCommit

from ._base import OWNER, ConformanceBase, Reopen, observe, record


class KillTests(ConformanceBase):
    @pytest.mark.parametrize("kind", ["delta", "full", "final", "many"])
    def test_append_is_atomic_under_a_kill(
        self, checkpointer: Checkpointer, reopen: Reopen | None, kind: Literal["delta", "full", "final", "many"]
    ) -> None:
        """A process SIGKILLed at any line of append (or of append_many, whose appends commit together)
        leaves the run exactly as before or after it, never between."""
        if not self.survives_process:
            pytest.skip(f"{type(self).__name__}.survives_process is False: its runs die with the process")
        if reopen is None:
            pytest.skip("no `reopen` fixture: a store that cannot be opened again cannot be checked after a kill")
        if not hasattr(os, "fork"):
            pytest.skip("needs os.fork")
        if kind == "many" and not isinstance(checkpointer, GroupCommit):
            pytest.skip(f"{type(checkpointer).__name__} has no append_many (it is optional)")

        def prepare(run_id: str) -> None:
            self._create(checkpointer, run_id)
            checkpointer.append(run_id, record(2), OWNER)

        def append(store: Checkpointer, *, run_id: str) -> None:
            if kind == "many":
                assert isinstance(store, GroupCommit)
                done = Append(run_id, record(4), OWNER, status="completed", result='"done"')
                assert store.append_many([Append(run_id, record(3, full=True), OWNER), done]) == [None, None]
            elif kind == "final":
                store.append(run_id, record(3), OWNER, status="completed", result='"done"')
            else:
                store.append(run_id, record(3, full=kind == "full"), OWNER)

        prepare("control")
        before = observe(checkpointer, "control")
        append(checkpointer, run_id="control")
        after = observe(checkpointer, "control")
        assert before != after
        module_file = sys.modules[type(checkpointer).__module__].__file__ or ""
        line = 0
        while True:
            line += 1
            assert line < 5000, "append ran for 5000 lines of the store's code without finishing"
            run_id = f"kill-{line}"
            prepare(run_id)
            killed = _kill_during(
                reopen, functools.partial(append, run_id=run_id), module_file, line, self.kill_timeout
            )
            store = reopen()
            try:
                seen = observe(store, run_id)
            finally:
                store.close()
            assert seen in (before, after), f"a kill at line event {line} of append left a partial write: {seen!r}"
            if not killed:
                assert seen == after, "append returned in the child, yet its record is not stored"
                break


def _kill_during(
    open_store: Reopen, action: Callable[[Checkpointer], None], module_file: str, line: int, timeout: float
) -> bool:
    """Run ``action`` on a store opened in a forked child that SIGKILLs itself at its ``line``-th line event
    in ``module_file``. True when the child died there; False when ``action`` returned first.
    """
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 3
        try:
            count = 0

            def local(frame: FrameType, event: str, arg: Any) -> Any:
                nonlocal count
                if event == "line":
                    count += 1
                    if count >= line:
                        os.kill(os.getpid(), signal.SIGKILL)
                return local

            def tracer(frame: FrameType, event: str, arg: Any) -> Any:
                return local if frame.f_code.co_filename == module_file else None

            store = open_store()  # a connection of its own, as a new process would have
            sys.settrace(tracer)
            try:
                action(store)
            finally:
                sys.settrace(None)
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    give_up = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > give_up:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"append in a forked child did not finish within {timeout}s (line {line})")
        time.sleep(0.001)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return True
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return False
    raise AssertionError(f"the forked child running append failed (wait status {status}); its traceback is above")
