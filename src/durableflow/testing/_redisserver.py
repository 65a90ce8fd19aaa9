"""The shared world's Redis as other processes reach it: fakeredis served on a Unix socket by one thread.

Kill mode's lives talk to the world's fakeredis through a real redis-py
client, as they would to a real server. Each life connects once and sends a
few commands, and an exploration has a dozen lives: what a connection costs
the test's process weighs more than its commands. fakeredis's own server
starts a thread per connection, polls it, and speaks TCP; here one thread
answers every connection as its bytes arrive, over a Unix socket. A
connection that sends a command that can wait (``BLPOP``, ``XREAD``, a
subscription: anything that answers later than its request) is handed to a
thread of its own, where it may wait without holding up the others.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import selectors
import shutil
import socket
import sys
import tempfile
import threading
from typing import Any, final

_WAITS = re.compile(
    rb"\r\n(?:B[A-Z]*|XREAD[A-Z]*|TS\.[A-Z.]*|[PS]?SUBSCRIBE|MONITOR|WAIT[A-Z]*|CLIENT)\r\n", re.IGNORECASE
)
"""A command that may answer later than asked (or push replies unasked) among the bytes a client sent; a key
or value spelled like one only costs its connection a thread."""

_POLL = 0.01
"""Seconds a waiting connection's thread sleeps between looks for replies pushed to it (a message published)."""


_SUN_PATH = 104 if sys.platform == "darwin" else 108
"""Bytes a Unix socket's path may take, its closing NUL included (``sun_path``'s size)."""


def socket_directory(prefix: str, name: str) -> str | None:
    """A new private directory in which a Unix socket called ``name`` can be bound: in the temporary directory,
    or in ``/tmp`` when that one's path is too long for a socket's (a ``TMPDIR`` can be); ``None`` when neither
    fits, and the caller serves over TCP instead."""
    for base in (tempfile.gettempdir(), "/tmp"):
        path = os.path.join(base, f"{prefix}{'x' * 8}", name)  # mkdtemp adds eight characters to the prefix
        if len(os.fsencode(path)) < _SUN_PATH and os.path.isdir(base):
            return tempfile.mkdtemp(prefix=prefix, dir=base)
    return None


def internals() -> dict[str, Any] | None:
    """What serving needs of fakeredis's own server module, or ``None`` where it does not look as expected."""
    try:
        from fakeredis._clients import _tcp_server as module
    except ImportError:
        return None
    names = ("RaiseErrorTypes", "_INTERNAL_CONNECTION_KWARGS", "FakeRedisConnection", "encode_reply")
    if not all(hasattr(module, name) for name in names):
        return None
    return {name: getattr(module, name) for name in names}


@final
class UnixRedisServer:
    """A fakeredis server on a Unix socket of its own: ``path`` is where clients connect, ``fake_server`` its data."""

    def __init__(
        self, fake_server: Any, parts: dict[str, Any], connection_options: dict[str, Any], directory: str
    ) -> None:
        self.fake_server = fake_server
        self._parts = parts
        self._options = connection_options
        self._dir = directory
        self.path = os.path.join(self._dir, "redis.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._selector = selectors.DefaultSelector()
        self._wake = os.pipe()
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, Any] = {}
        self._waiting: list[threading.Thread] = []
        try:
            self._listener.bind(self.path)
            self._listener.listen(128)
            self._selector.register(self._listener, selectors.EVENT_READ)
            self._selector.register(self._wake[0], selectors.EVENT_READ)
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._serve, daemon=True, name="durableflow-redis")
        self._thread.start()

    def stop(self) -> None:
        """Stop serving at once (woken through a pipe, not at a poll), close every connection, remove the socket."""
        self._stopping.set()
        os.write(self._wake[1], b"x")
        self._thread.join()
        for thread in self._waiting:  # one still waiting on a command (BLPOP 0) is a daemon: left to wait
            thread.join(_POLL * 10)
        for client in list(self._connections):
            self._drop(client)
        self._release()

    def _release(self) -> None:
        self._selector.close()
        self._listener.close()
        for fd in self._wake:
            os.close(fd)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.fileobj == self._wake[0]:
                    return
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    self._answer(key.fileobj)  # type: ignore[arg-type]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        connection = self._parts["FakeRedisConnection"](
            server=self.fake_server,
            client_info={"laddr": self.path, "addr": self.path, "fd": client.fileno()},
            **self._parts["_INTERNAL_CONNECTION_KWARGS"],
            **self._options,
        )
        self._connections[client] = connection
        self._selector.register(client, selectors.EVENT_READ)

    def _answer(self, client: socket.socket) -> None:
        try:
            data = client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(client)
            self._drop(client)
            return
        if _WAITS.search(data):  # from now on in a thread of its own, where waiting holds up nobody
            self._selector.unregister(client)
            thread = threading.Thread(target=self._wait_on, args=(client, data), daemon=True, name="durableflow-redis")
            self._waiting.append(thread)
            thread.start()
            return
        connection = self._connections[client]
        try:
            connection.get_socket().sendall(data)
            client.sendall(self._replies(connection))
        except Exception:  # fakeredis raising (its faked outage, say) ends this connection, not the serving thread
            self._selector.unregister(client)
            self._drop(client)

    def _replies(self, connection: Any) -> bytes:
        """Every reply ready on ``connection``, in the protocol it negotiated (RESP2 until a HELLO)."""
        encode, raised = self._parts["encode_reply"], self._parts["RaiseErrorTypes"]
        replies = []
        while connection.can_read():
            try:
                reply = connection.read_response()
            except raised as exc:  # an error reply: sent, and the connection served on
                reply = exc
            replies.append(encode(reply, connection.get_socket()._client_info.protocol_version))
        return b"".join(replies)

    def _wait_on(self, client: socket.socket, data: bytes) -> None:
        """Serve one connection that may wait, until it closes or the server stops."""
        connection = self._connections[client]
        try:
            while not self._stopping.is_set():
                if data:
                    connection.get_socket().sendall(data)  # may wait here, for another client's push
                    data = b""
                replies = self._replies(connection)
                if replies:
                    client.sendall(replies)
                if select.select([client], [], [], _POLL)[0]:
                    data = client.recv(65536)
                    if not data:
                        break
        except Exception:  # as in ``_answer``: the connection ends, its client sees it closed
            pass
        finally:
            self._drop(client)

    def _drop(self, client: socket.socket) -> None:
        connection = self._connections.pop(client, None)
        if connection is not None:
            with contextlib.suppress(Exception):  # what disconnecting raises cannot matter to a closed client
                connection.disconnect()
        client.close()
