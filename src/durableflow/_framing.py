"""How a record is sealed for storage, and checked on its way back: a magic, then a checksum or a keyed MAC.

A record is ``magic + digest + body``. Without a key, the magic is ``DFR1`` and the digest an
unkeyed blake2b-128 of the run id, the sequence number, the body's length and its CRC-32: it catches
accidental damage (a torn write, a flipped bit: the CRC, as ZIP and PostgreSQL's WAL use one; a record
moved to another run or position), but anyone who can write the store can recompute it. The body goes
through the CRC, not blake2b: 7 GB/s against 1 GB/s here, which a megabyte of state feels.
With a key (``key=`` on the checkpointer, or ``$DURABLEFLOW_KEY``), the magic is ``DFK1`` and the
digest a blake2b-128 MAC under that key: a record written or edited without the key is refused, and so
is an unkeyed record while a key is set, so a forger cannot downgrade a store to plain checksums.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import zlib
from types import EllipsisType

from ._errors import SerializationError, SnapshotError

MAGIC = b"DFR1"
"""A record sealed with a plain checksum."""
MAGIC_KEYED = b"DFK1"
"""A record sealed with a MAC under a secret key."""
KEY_ENV = "DURABLEFLOW_KEY"
"""The environment variable a key is read from when the checkpointer sets none."""
DIGEST_SIZE = 16
HEADER_SIZE = len(MAGIC) + DIGEST_SIZE
MIN_KEY_BYTES = 16

Key = bytes | None | EllipsisType
"""A record key as passed around: bytes, ``None`` for none, ``...`` for ``$DURABLEFLOW_KEY`` (if set)."""


def record_key(checkpointer: object | None = None) -> bytes | None:
    """The key a checkpointer's records are sealed with: its ``key`` attribute, else ``$DURABLEFLOW_KEY``."""
    key = getattr(checkpointer, "key", None)
    if key is None:
        environ = getattr(os.environ, "_data", None)  # CPython's dict behind os.environ, kept up to date by it
        if environ is not None and _KEY_ENV_ENCODED not in environ:
            return None  # the common case, asked once per run: os.environ.get raises and catches a KeyError for it
        key = os.environ.get(KEY_ENV) or None
    return None if key is None else _key_bytes(key)


_KEY_ENV_ENCODED = os.environ.encodekey(KEY_ENV)


def checked_key(key: str | bytes | None) -> str | bytes | None:
    """``key`` as given to a checkpointer, refused now (``ValueError``) if it is too short to be one."""
    if key is not None:
        _key_bytes(key)
    return key


@functools.lru_cache(maxsize=8)
def _key_bytes(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(
            f"a record key needs at least {MIN_KEY_BYTES} bytes, this one has {len(raw)}; make one with "
            "python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return raw if len(raw) <= 64 else hashlib.blake2b(raw).digest()  # blake2b takes keys of up to 64 bytes


def _resolve(key: Key) -> bytes | None:
    if key is ...:
        return record_key()
    return None if key is None else _key_bytes(key)


def _digest(data: bytes, run_id: str, seq: int, key: bytes | None) -> bytes:
    if key is None:
        position = f"{run_id}\0{seq}\0{len(data)}\0{zlib.crc32(data)}"
        return hashlib.blake2b(position.encode(), digest_size=DIGEST_SIZE).digest()
    mac = hashlib.blake2b(f"{run_id}\0{seq}\0".encode(), digest_size=DIGEST_SIZE, key=key)
    mac.update(data)
    return mac.digest()


def seal(body: str, run_id: str, seq: int, key: Key = ...) -> bytes:
    """``body`` as record ``seq`` of run ``run_id``, sealed with ``key`` (default: ``$DURABLEFLOW_KEY``, if set)."""
    resolved = _resolve(key)
    return seal_with(run_digest(run_id, resolved), resolved is not None, body, seq, run_id)


def run_digest(run_id: str, key: bytes | None) -> hashlib.blake2b:
    """The digest of the run id (under the key), made once per run: each record's seal copies it, which gives
    the same digest for less than half the work (a keyed blake2b hashes its key as a block of its own)."""
    try:
        return hashlib.blake2b(f"{run_id}\0".encode(), digest_size=DIGEST_SIZE, key=key or b"")
    except UnicodeEncodeError as exc:
        raise _surrogate(run_id, exc) from None


def seal_with(prefix: hashlib.blake2b, keyed: bool, body: str, seq: int, run_id: str) -> bytes:
    """``body`` as record ``seq`` of run ``run_id``, whose ``run_digest`` is ``prefix``. A function, not an object
    per run: a run in flight keeps one object less for the garbage collector to walk."""
    try:
        data = body.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate in a key or a buffer id: no store holds it
        raise _surrogate(run_id, exc) from None
    digest = prefix.copy()
    if keyed:
        digest.update(b"%d\0" % seq)
        digest.update(data)
        return b"".join((MAGIC_KEYED, digest.digest(), data))
    digest.update(b"%d\0%d\0%d" % (seq, len(data), zlib.crc32(data)))
    return b"".join((MAGIC, digest.digest(), data))


def _surrogate(run_id: str, exc: UnicodeEncodeError) -> SerializationError:
    return SerializationError(
        f"cannot checkpoint run {run_id!r}: a lone surrogate ({exc.object[exc.start : exc.end]!r}) is not "
        "text; use keys and ids that are valid Unicode"
    )


def opened(raw: object, run_id: str, seq: int, key: Key = ...) -> bytes:
    """The body of a stored record once its seal is checked; ``SnapshotError`` names the run, the record and why."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise SnapshotError(f"stored record is a {type(raw).__name__}, not bytes", run_id=run_id, seq=seq)
    raw = bytes(raw)
    if len(raw) < HEADER_SIZE:
        raise SnapshotError("record is truncated", run_id=run_id, seq=seq)
    magic, digest, data = raw[: len(MAGIC)], raw[len(MAGIC) : HEADER_SIZE], raw[HEADER_SIZE:]
    resolved = _resolve(key)
    if magic == MAGIC_KEYED:
        if not resolved:
            raise SnapshotError(
                f"the record is sealed with a key, and none is set: set ${KEY_ENV} (or key= on the checkpointer) "
                "to the key the runs were written with",
                run_id=run_id,
                seq=seq,
            )
        what = (
            "MAC mismatch: the record was written under another key than this reader's (check the key), "
            "edited, written without a key, or belongs to another run or position"
        )
    elif magic == MAGIC:
        if resolved:
            raise SnapshotError(
                "the record has a plain checksum, but a key is set: it was written without the key, perhaps by "
                f"someone who does not hold it; unset ${KEY_ENV} only if you trust whoever wrote this store",
                run_id=run_id,
                seq=seq,
            )
        what = "checksum mismatch: the record is corrupt, truncated, was edited, or belongs to another run or position"
    else:
        raise SnapshotError("not a durableflow record (foreign data or a newer format)", run_id=run_id, seq=seq)
    if not hmac.compare_digest(_digest(data, run_id, seq, resolved), digest):
        raise SnapshotError(what, run_id=run_id, seq=seq)
    return data
