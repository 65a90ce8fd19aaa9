"""The floor under a kill-mode life: what a fork and an exit cost, and what writing inherited pages costs.

Three figures, CPU time (median of the rounds): a fork of this process, before it imports durableflow and
again with the imports of a zygote serving the README's document pipeline (the parent's share, then the child's
when it exits at once); and, in a fork of a process holding 40 MB, 1,000 writes to distinct inherited pages,
each a copy-on-write fault, then the same after asking the kernel to copy those pages first
(``MADV_POPULATE_WRITE``, Linux 5.14 and later). Linux only.

    taskset -c 0 python tests/benchmarks/bench_fork.py [--rounds 41]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import mmap
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

MADV_POPULATE_WRITE = 23


def fork_costs(rounds: int) -> tuple[float, float]:
    """The parent's CPU time in ``fork()``, and the child's when it exits at once (seconds, medians)."""
    gc.freeze()  # as kill mode does before a fork
    parent, child = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.process_time()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - measured from the parent
            os._exit(0)
        parent.append(time.process_time() - began)
        os.waitpid(pid, 0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    gc.unfreeze()
    return statistics.median(parent), statistics.median(child)


def in_a_fork(body: Callable[[], None]) -> float:
    """The CPU time ``body()`` takes in a forked child (seconds; NaN if the child left without saying)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reported through the pipe
        began = time.thread_time()
        body()
        os.write(write, repr(time.thread_time() - began).encode())
        os._exit(0)
    os.close(write)
    said = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    return float(said) if said else math.nan


def page_costs(rounds: int, pages: int = 1000) -> tuple[float, float]:
    """Writing ``pages`` inherited pages in a fork: one fault each, then after a bulk copy (seconds, medians)."""
    size = 40 << 20
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory[:: mmap.PAGESIZE] = b"\1" * (size // mmap.PAGESIZE)  # resident, shared with each fork
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def write(populate: bool) -> Callable[[], None]:
        def body() -> None:
            if populate and libc.madvise(address, pages * mmap.PAGESIZE, MADV_POPULATE_WRITE) != 0:
                os._exit(1)  # an older kernel: reported as no figure
            for page in range(pages):
                memory[page * mmap.PAGESIZE] = 2

        return body

    faults = statistics.median(in_a_fork(write(False)) for _ in range(rounds))
    bulk = statistics.median(in_a_fork(write(True)) for _ in range(rounds))
    return faults, bulk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41, help="forks per figure; the median is shown")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("Linux only")
    bare = fork_costs(args.rounds)
    faults, bulk = page_costs(args.rounds)
    sys.path.insert(0, str(Path(__file__).parents[2]))
    import freezegun  # noqa: F401

    import examples.document_pipeline  # noqa: F401 - what a zygote serving the pipeline holds
    from durableflow.testing import _kill  # noqa: F401

    loaded = fork_costs(args.rounds)
    status = Path("/proc/self/status").read_text()
    held = {
        line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith(("VmRSS", "RssAnon"))
    }
    before = f"{bare[0] * 1e3:.2f} ms in the parent, {bare[1] * 1e3:.2f} ms in the child"
    print(f"fork of this script before its imports: {before}")
    print(
        f"fork with a zygote's imports ({int(held['VmRSS']) >> 10} MB, {int(held['RssAnon']) >> 10} MB anonymous): "
        f"{loaded[0] * 1e3:.2f} ms in the parent, {loaded[1] * 1e3:.2f} ms in the child"
    )
    print(f"1,000 inherited pages written in a fork: {faults * 1e3:.2f} ms, after a bulk copy: {bulk * 1e3:.2f} ms")
    print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
