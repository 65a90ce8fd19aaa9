"""A store's password is never shown: not in the errors that name the store (the crash harness's included),
not when its URL cannot be read. A password the store refuses is told as such, not as a store that is away;
a SQLite URL missing a slash is told the URL it meant."""

from __future__ import annotations

from typing import Any

import pytest

from durableflow import (
    PostgresCheckpointer,
    RedisCheckpointer,
    StoreAuthenticationError,
    StoreUnavailableError,
    open_checkpointer,
)
from durableflow._checkpointer import without_password
from durableflow.testing._stores import _reachable


def test_the_harness_names_an_unreachable_redis_without_its_password() -> None:
    with pytest.raises(StoreUnavailableError) as raised:
        _reachable("redis://:wrong-Pa55word@127.0.0.1:1/0")  # nothing listens on port 1
    assert "wrong-Pa55word" not in str(raised.value)
    assert "the Redis store at redis://:***@127.0.0.1:1/0 is unreachable" in str(raised.value)


def test_the_harness_tells_a_wrong_password_as_one(secured_redis_url: str) -> None:
    wrong = secured_redis_url.replace(":s3cret@", ":wrong-Pa55word@")
    with pytest.raises(StoreUnavailableError) as raised:
        _reachable(wrong)
    told = str(raised.value)
    assert "wrong-Pa55word" not in told and "unreachable" not in told
    assert f"the Redis store at {without_password(wrong)} refused to authenticate" in told
    assert "check the password" in told
    _reachable(secured_redis_url).close()  # the right one is let in


@pytest.mark.parametrize("password", ["wrong-Pa55word", None])
def test_a_redis_store_tells_a_wrong_or_missing_password_as_one(secured_redis_url: str, password: str | None) -> None:
    url = secured_redis_url.replace(":s3cret@", f":{password}@" if password else "")
    store = RedisCheckpointer(url)
    try:
        with pytest.raises(StoreUnavailableError) as raised:
            store.runs()
    finally:
        store.close()
    told = str(raised.value)
    assert "wrong-Pa55word" not in told and "unreachable" not in told and "resume once" not in told
    assert f"Redis at {without_password(url)} refused to authenticate" in told
    assert "check the password (and user) in its URL" in told


@pytest.mark.parametrize(
    "said",
    [
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
        'authentication failed for user "app"',
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: fe_sendauth: no password supplied',
    ],
)
def test_a_postgres_store_tells_a_refused_password_as_one(monkeypatch: pytest.MonkeyPatch, said: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    store = PostgresCheckpointer("postgresql://app:wrong-Pa55word@127.0.0.1:5432/db")

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError(said)

    monkeypatch.setattr(store, "_connection", refused)
    with pytest.raises(StoreUnavailableError) as raised:
        store.runs()
    told = str(raised.value)
    assert "wrong-Pa55word" not in told and "unreachable" not in told
    assert "PostgreSQL at postgresql://app:***@127.0.0.1:5432/db refused to authenticate" in told
    assert "check the password (in the URL, PGPASSWORD or ~/.pgpass)" in told


def test_a_postgres_store_tells_a_missing_password_in_any_language(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's flag that the server asked for a password it did not get, not its (translated) words."""
    psycopg = pytest.importorskip("psycopg")
    store = PostgresCheckpointer("postgresql://app@127.0.0.1:5432/db")

    class AskedForOne:  # the failed connection psycopg hands over with the error
        needs_password = True

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("fe_sendauth: kein Passwort angegeben", pgconn=AskedForOne())

    monkeypatch.setattr(store, "_connection", refused)
    with pytest.raises(StoreAuthenticationError, match="refused to authenticate"):
        store.runs()


def test_a_postgres_store_that_is_away_is_still_told_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    psycopg = pytest.importorskip("psycopg")
    store = PostgresCheckpointer("postgresql://app@127.0.0.1:5432/db")

    def away(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError(
            "connection failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP "
            "connections?\n"
        )

    monkeypatch.setattr(store, "_connection", away)
    with pytest.raises(StoreUnavailableError, match="is unreachable or did not answer") as raised:
        store.runs()
    assert "(connection failed: Connection refused Is the server running" in str(raised.value)  # on one line


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3%zzcret@localhost:5432/db",  # a password typed as it is, not percent-encoded
        "postgresql://localhost:5432/db?password=s3%zzcret",
    ],
)
def test_a_postgres_url_that_cannot_be_read_is_told_without_its_password(url: str) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ValueError) as raised:
        PostgresCheckpointer(url)
    told = str(raised.value)
    assert "zzcret" not in told
    assert f"cannot read the PostgreSQL URL {without_password(url)} (invalid percent-encoded token" in told
    assert "percent-encoded, as %25" in told and "PGPASSWORD" in told and "~/.pgpass" in told


def test_a_postgres_store_shows_that_its_url_holds_a_password() -> None:
    """Named with ``***`` for a password, as a Redis store is: a command suggested with it says to put it back."""
    pytest.importorskip("psycopg")
    assert PostgresCheckpointer("postgresql://app:s3cret@db:5433/app").url == "postgresql://app:***@db:5433/app"
    assert PostgresCheckpointer("host=db user=app password=s3cret").url == "postgresql://app:***@db:5432/"
    assert PostgresCheckpointer("postgresql://app@db/app").url == "postgresql://app@db:5432/app"
    assert PostgresCheckpointer("postgresql://db/app").url == "postgresql://db:5432/app"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("host=db user=app password=s3%zz dbname=x", "host=db user=app password=*** dbname=x"),
        ("host=db password = 'a b\\' c' dbname=x", "host=db password = *** dbname=x"),
        ("host=db password='unterminated", "host=db password=***"),
        ("redis://:pw@[::1/0?password=pw", "redis://:***@[::1/0?password=***"),  # urllib cannot read it
        ("sqlite:///runs password=x.db", "sqlite:///runs password=x.db"),
    ],
)
def test_without_password_hides_a_conninfo_password_and_one_in_a_url_urllib_refuses(url: str, shown: str) -> None:
    assert without_password(url) == shown


def test_an_unknown_store_url_is_named_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"unknown store URL 'redis\+x://:\*\*\*@db/0'"):
        open_checkpointer("redis+x://:s3cret@db/0")


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("sqlite://runs.db", "sqlite:///runs.db"),
        ("runs.db", "sqlite:///runs.db"),
        ("/data/r.db", "sqlite:////data/r.db"),
    ],
)
def test_a_sqlite_url_missing_a_slash_is_told_the_url_it_meant(url: str, meant: str) -> None:
    with pytest.raises(ValueError, match="unknown store URL") as raised:
        open_checkpointer(url)
    assert f"is {meant})" in str(raised.value)
