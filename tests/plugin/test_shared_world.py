"""Kill mode's shared world: the fakeredis server that forked lives reach over a socket answers as Redis would,
and what it reads out of a world is the same from one world to the next."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from durableflow.testing import _redisworld
from durableflow.testing._world import FakeWorld


@pytest.fixture
def world() -> Iterator[FakeWorld]:
    shared = FakeWorld(shared=True)
    try:
        yield shared
    finally:
        shared.close()


def test_a_pipeline_sent_in_one_piece_gets_every_reply_in_order(world: FakeWorld) -> None:
    """Commands that arrive together (a pipeline, a transaction) are each answered, in order."""
    client = world.redis_client({"decode_responses": True}, fresh=True)
    with client.pipeline(transaction=False) as pipe:
        pipe.hset("h", "a", "1").hset("h", "b", "2").hgetall("h").rpush("l", "x", "y").lrange("l", 0, -1)
        assert pipe.execute() == [1, 1, {"a": "1", "b": "2"}, 2, ["x", "y"]]
    with client.pipeline(transaction=True) as pipe:
        pipe.incr("n").incr("n").get("n")
        assert pipe.execute() == [1, 2, "2"]
    client.close()


def test_an_error_reply_leaves_the_connection_serving(world: FakeWorld) -> None:
    """A command Redis refuses raises in the client, and the same connection answers the next one."""
    client = world.redis_client({"decode_responses": True}, fresh=True)
    client.set("text", "not a number")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.incr("text")
    assert client.get("text") == "not a number"
    assert len(client.connection_pool._available_connections) == 1  # the one connection, kept
    client.close()


def test_a_value_larger_than_one_read_arrives_whole(world: FakeWorld) -> None:
    """A command longer than what one read of the socket returns is put together before it runs."""
    client = world.redis_client(fresh=True)
    value = bytes(range(256)) * 1024  # 256 KB
    client.set("big", value)
    assert client.get("big") == value
    client.close()


def test_a_client_that_gave_no_library_name_shows_none(world: FakeWorld) -> None:
    """The server's own handling of a connection introduces nobody, as a real Redis would see it."""
    client = world.redis_client(fresh=True)
    fields = dict(field.partition("=")[::2] for field in client.execute_command("CLIENT", "INFO").decode().split())
    assert fields.get("lib-name", "") == ""
    client.close()


def test_a_value_read_out_of_one_world_is_not_read_out_again_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worlds share what they read out (one read per distinct value), each key still its own world's."""
    reads: list[bytes] = []
    read = _redisworld.redis_value
    monkeypatch.setattr(_redisworld, "redis_value", lambda client, key: reads.append(key) or read(client, key))
    text = f"text {uuid.uuid4()}"  # never read out before in this process
    first, second = FakeWorld(), FakeWorld()
    first.redis_client().hset("converted", "1", text)
    second.redis_client().hset("converted", "1", text)
    second.redis_client().set("other", text)
    assert first.redis_snapshot() == {"0:converted": {"type": "hash", "value": {"1": text}}}
    assert second.redis_snapshot() == {
        "0:converted": {"type": "hash", "value": {"1": text}},
        "0:other": {"type": "string", "value": text},
    }
    assert len(reads) == 2  # the hash once, the string once


def test_a_command_that_waits_holds_up_no_other_connection(world: FakeWorld) -> None:
    """A blocking pop waits for a push that another connection makes meanwhile, as on a real server."""
    waiting = world.redis_client({"decode_responses": True}, fresh=True)
    pushing = world.redis_client({"decode_responses": True}, fresh=True)
    popped: list[object] = []
    thread = threading.Thread(target=lambda: popped.append(waiting.blpop(["queue"], timeout=10)))
    thread.start()
    connections = world._tcp_server._connections
    while not any(getattr(c._sock, "_blocked", False) for c in list(connections.values())):
        time.sleep(0.001)  # until the pop waits on the server
    assert pushing.rpush("queue", "job") == 1
    thread.join()
    assert popped and list(popped[0]) == ["queue", "job"]  # type: ignore[call-overload]
    assert pushing.llen("queue") == 0
    waiting.close()
    pushing.close()


def test_a_subscriber_is_sent_what_another_connection_publishes(world: FakeWorld) -> None:
    """A message published on one connection reaches a subscriber on another, unasked."""
    listener = world.redis_client({"decode_responses": True}, fresh=True).pubsub()
    listener.subscribe("news")
    assert listener.get_message(timeout=5) == {"type": "subscribe", "pattern": None, "channel": "news", "data": 1}
    publisher = world.redis_client({"decode_responses": True}, fresh=True)
    assert publisher.publish("news", "hello") == 1
    message = listener.get_message(timeout=5)
    assert message is not None and message["data"] == "hello"
    listener.close()
    publisher.close()


def test_the_shared_world_is_served_on_a_unix_socket_removed_when_it_closes() -> None:
    """Lives reach the shared world's Redis through a Unix socket of its own, gone once the world closes."""
    shared = FakeWorld(shared=True)
    path = shared.redis_address
    assert isinstance(path, str) and os.path.exists(path)
    client = shared.redis_client(fresh=True)
    assert client.ping() is True
    client.close()
    shared.close()
    assert not os.path.exists(path)


def test_a_command_that_fakeredis_fails_ends_its_connection_and_no_other(world: FakeWorld) -> None:
    """While fakeredis fakes an outage (its server marked disconnected) a command fails on a closed connection;
    once the server is back, the other connections and new ones are answered as before."""
    options = {"decode_responses": True, "socket_timeout": 5}
    other = world.redis_client(options, fresh=True)
    assert other.set("k", "v")
    failing = world.redis_client(options, fresh=True)
    assert failing.ping()
    world._server.connected = False
    try:
        with pytest.raises(redis.ConnectionError):
            failing.get("k")
    finally:
        world._server.connected = True
    assert other.get("k") == "v"
    new = world.redis_client(options, fresh=True)
    assert new.get("k") == "v"
    for client in (other, failing, new):
        client.close()
