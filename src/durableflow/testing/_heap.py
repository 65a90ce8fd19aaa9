"""Free chunks of the C heap, held out of ``malloc``'s reach before a fork, so that a forked life copies fewer pages."""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
from typing import Any

_HELD_AT_MOST = 4 << 20
"""Bytes of free heap ``hold_free_chunks`` holds before it hands them back and holds anew: some 70 explorations'
worth (each frees about 50 KB), so that a long test session's heap stays within a few megabytes of its size."""
_SIZES = (65536, 32768, 16384, 8192, 4096, 2048, *range(1024, 0, -16))
"""Sizes asked for, largest first (a larger free chunk is split): every size class glibc caches per thread
(up to 1,032 bytes, handed out for their exact class only) among them."""
_held: list[int] = []
_held_bytes = [0]
_holding = threading.Lock()


def hold_free_chunks() -> None:
    """Take every free chunk of the C heap out of ``malloc``'s reach, before a fork (glibc on Linux; elsewhere
    nothing).

    A forked life's ``malloc`` would hand out the free chunks scattered through the heap it inherited, and
    unlink each from its list by writing to its neighbours: a copied page for every page it writes (a fifth of a
    life's page faults). Held here, they are not there to hand out: a life allocates from the top of the heap,
    fresh pages side by side (some 15% fewer page faults a life). They were free already: holding them costs no
    new memory, and this process allocates past them until they are handed back."""
    if threading.current_thread() is not threading.main_thread():
        return  # a life forked from another thread mallocs from that thread's arena, not the heap held here
    libc = _glibc()
    if libc is None or not _holding.acquire(blocking=False):  # another thread is at it: only an optimisation
        return
    try:
        _hold(libc)
    finally:
        _holding.release()


def _hold(libc: Any) -> None:
    if _held_bytes[0] >= _HELD_AT_MOST:  # handed back, all of them, to be held anew: a heap that grows no further
        chunks = _held[:]
        _held.clear()  # forgotten before any is freed: an exception meanwhile (a signal's) leaks, never frees twice
        _held_bytes[0] = 0
        for chunk in chunks:
            libc.free(chunk)
    for size in _SIZES:
        top = libc.sbrk(0) - libc.mallinfo2().keepcost  # where the heap's unused top begins
        while _held_bytes[0] < _HELD_AT_MOST:
            chunk = libc.malloc(size)
            if chunk is None:
                return
            if chunk >= top:  # none of this size left within the heap: the next size down
                libc.free(chunk)
                break
            _held.append(chunk)
            _held_bytes[0] += size


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


@functools.cache
def _glibc() -> Any:
    """The C library, with what ``hold_free_chunks`` calls declared, if it is glibc 2.33 or later on Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # musl, or a glibc before mallinfo2
        return None
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.restype, libc.free.argtypes = None, [ctypes.c_void_p]
    libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
    return libc
