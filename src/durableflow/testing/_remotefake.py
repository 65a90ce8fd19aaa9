"""A kill-mode life's handle on a user's fake, which lives in the test's process behind a manager.

A life may hand one fake to another (``bank.use_ledger(ledger)``): the handle then travels to the test's
process as an argument, where it must arrive as that process's own fake, not as a handle to itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_SERVING: dict[object, Callable[[int], Any]] = {}
"""In the process that serves the fakes: its manager's address -> what a run is served for fake ``index``."""


def serving(address: object, serve: Callable[[int], Any]) -> None:
    _SERVING[_token(address)] = serve


def stopped_serving(address: object) -> None:
    _SERVING.pop(_token(address), None)


def _token(address: object) -> object:
    return tuple(address) if isinstance(address, list) else address  # a TCP address may come back as a list


def _served(address: object, index: int) -> Any:
    """A handle arriving where its fake lives: what that process serves its runs for the fake."""
    serve = _SERVING.get(_token(address))
    if serve is None:
        raise RuntimeError(
            "a handle on a fake of the crash harness reached a process that does not serve it: hand fakes to each "
            "other within one run's resources only"
        )
    return serve(index)


class RemoteFake:
    """A forked life's proxy to a fake that lives in the parent, showing the fake's own method signatures.

    A manager's proxy methods take ``*args, **kwargs``; ``ctx.effect`` reads a
    function's signature to decide whether to hand it ``idempotency_key``.
    """

    __slots__ = ("_address", "_index", "_proxy", "_template")

    def __init__(self, proxy: Any, template: Any, address: object, index: int) -> None:
        self._proxy = proxy
        self._template = template  # this process's copy of the fake: for its signatures only
        self._address = address
        self._index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return _served, (self._address, self._index)

    def __getattr__(self, attribute: str) -> Any:
        if attribute in RemoteFake.__slots__:  # not set yet: never ask the proxy for them
            raise AttributeError(attribute)
        method = getattr(self._proxy, attribute)
        original = getattr(self._template, attribute, None)
        if not callable(original):
            return method

        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call
