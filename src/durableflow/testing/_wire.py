"""How the test's process and its zygotes talk: pickled messages on a Unix socket, each one framed by
its length, with file descriptors passed alongside (a life's pipes)."""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any


def dumps(value: object) -> bytes:
    """Pickle ``value``: by reference where importable, by value (cloudpickle) where not."""
    try:
        import cloudpickle  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return bytes(cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def has_cloudpickle() -> bool:
    try:
        import cloudpickle  # type: ignore[import-not-found, import-untyped, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def send(sock: socket.socket, message: tuple[Any, ...], fds: list[int]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    header = struct.pack("!I", len(data))
    if fds:
        socket.send_fds(sock, [header], fds)
        sock.sendall(data)
    else:
        sock.sendall(header + data)


def receive(sock: socket.socket) -> tuple[tuple[Any, ...] | None, list[int]]:
    header, fds, _, _ = socket.recv_fds(sock, 4, 4)
    if not header:
        return None, []
    while len(header) < 4:
        more = sock.recv(4 - len(header))
        if not more:
            return None, []
        header += more
    (size,) = struct.unpack("!I", header)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None, []
        data += chunk
    return pickle.loads(data), list(fds)
