"""Clip results in PostgreSQL, shared by every run and machine that computes a corpus.

``results_store: postgresql://user@host:port/db`` (a libpq URI; the password from the URI,
``$PGPASSWORD`` or ``~/.pgpass``). One table keyed like the folder store (clip format, source
fingerprint, model sha256, settings digest), created on first use with its schema version
recorded; writers insert with ``ON CONFLICT DO NOTHING``, so concurrent runs are safe, and
lookups go in batches.

Runs also claim a clip before computing it: a session-level advisory lock on its key, held
until its result is saved and released by the server if the run dies. A run that finds a clip
claimed computes the others first, then waits for the claim and takes the stored result (or
computes the clip itself if the claimant died before storing it). Like the folder store it is a
cache: a server that cannot be reached or written is one warning, never a lost table.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import psycopg2
import psycopg2.extras

from saliency_assets.core.contract.config import redact_url
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.run.results_store import ResultKey, is_transient

SCHEMA_VERSION = "1"
RESULTS_TABLE = "saliency_clip_results"
META_TABLE = "saliency_results_store"
LOOKUP_BATCH = 1000
CONNECT_TIMEOUT_S = 10
_KEY_COLUMNS = ("clip_format", "source_fingerprint", "model_sha256", "settings_digest")
_VALUE_COLUMNS = (
    "status",
    "saliency_mean",
    "saliency_var",
    "detail",
    "frames_used",
    "width",
    "height",
    "transfer",
)
# Concurrent first uses must not race to create the tables: one advisory lock serialises them.
_CREATE_LOCK = 0x5A11E7C5
_CREATE = f"""
SELECT pg_advisory_xact_lock({_CREATE_LOCK});
CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, value text NOT NULL);
INSERT INTO {META_TABLE} VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {RESULTS_TABLE} (
    clip_format text NOT NULL,
    source_fingerprint text NOT NULL,
    model_sha256 text NOT NULL,
    settings_digest text NOT NULL,
    clip_key text NOT NULL,
    status text NOT NULL,
    saliency_mean double precision,
    saliency_var double precision,
    detail text,
    frames_used bigint NOT NULL,
    width bigint NOT NULL,
    height bigint NOT NULL,
    transfer text,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clip_format, source_fingerprint, model_sha256, settings_digest)
);
SELECT value FROM {META_TABLE} WHERE name = 'schema_version';
"""


def open_store(url: str, log: TextIO | None = sys.stderr) -> PostgresResultStore:
    return PostgresResultStore(url, log)


class PostgresResultStore:
    """The results table on one connection, opened on first use and shared by the engine's
    threads (one statement at a time)."""

    def __init__(self, url: str, log: TextIO | None = sys.stderr) -> None:
        self.url = url
        self.log = log
        self.usable = True
        self._connection: Any = None
        self._lock = threading.Lock()
        self._claims: set[int] = set()

    def lookup_many(self, keys: Iterable[ResultKey]) -> dict[ResultKey, ClipResult]:
        unique = list(dict.fromkeys(keys))
        found: dict[ResultKey, ClipResult] = {}
        for start in range(0, len(unique), LOOKUP_BATCH):
            rows = self._run(_select, unique[start : start + LOOKUP_BATCH]) or []
            for row in rows:
                found[ResultKey(*row[:4])] = ClipResult(*row[4:])
        return found

    def save(self, results: Iterable[tuple[ResultKey, ClipResult]]) -> int:
        batch = [(key, result) for key, result in results if not is_transient(result)]
        if not batch:
            return 0
        return 0 if self._run(_insert, batch) else len(batch)

    def claim(self, key: ResultKey) -> bool:
        """Whether this run may compute ``key`` (no live run is computing it)."""
        lock = _lock_id(key)
        if lock in self._claims:
            return True
        taken = self._run(_try_lock, lock)
        if taken is None:  # the server is gone: compute it here rather than wait
            return True
        if not taken:
            return False
        # Another run may have stored it and let go between our lookup and this claim.
        if self.lookup_many([key]):
            self._run(_unlock, [lock])
            return False
        self._claims.add(lock)
        return True

    def release(self, keys: Iterable[ResultKey]) -> None:
        locks = {_lock_id(key) for key in keys} & self._claims
        if locks:
            self._claims -= locks
            self._run(_unlock, sorted(locks))

    def wait_for_claims(self, keys: Iterable[ResultKey]) -> None:
        """Block until no other run holds a claim on any of ``keys`` (holding none meanwhile)."""
        for lock in sorted({_lock_id(key) for key in keys} - self._claims):
            self._run(_wait_lock, lock)

    def _run(self, operation: Callable[..., Any], *args: Any) -> Any:
        """``operation(cursor, *args)`` in a transaction; None once the server has failed."""
        with self._lock:
            if not self.usable:
                return None
            try:
                connection = self._connected()
                with connection, connection.cursor() as cursor:
                    return operation(cursor, *args)
            except (psycopg2.Error, StoreVersionError) as error:
                self._give_up(error)
                return None

    def _connected(self) -> Any:
        if self._connection is None:
            connection = psycopg2.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S)
            self._connection = connection
            with connection, connection.cursor() as cursor:
                cursor.execute(_CREATE)
                (version,) = cursor.fetchone()
            if version != SCHEMA_VERSION:
                raise StoreVersionError(
                    f"its schema version is {version}, this version reads {SCHEMA_VERSION}"
                )
        return self._connection

    def _give_up(self, error: Exception) -> None:
        self.usable = False
        self._claims.clear()  # the server drops a session's locks with the session
        if self._connection is not None:
            self._connection.close()
        reason = " ".join(str(error).split()) or type(error).__name__
        if self.log is not None:
            print(
                f"saliency: WARNING — results store {redact_url(self.url)}: cannot be used "
                f"({reason}); this run's remaining results are neither looked up nor stored "
                "(the table is still written)",
                file=self.log,
            )


class StoreVersionError(Exception):
    """The results table was created by a version with another schema."""


def _select(cursor: Any, keys: list[ResultKey]) -> list[tuple]:
    columns = ", ".join((*_KEY_COLUMNS, *_VALUE_COLUMNS))
    return psycopg2.extras.execute_values(
        cursor,
        f"SELECT {columns} FROM {RESULTS_TABLE} WHERE ({', '.join(_KEY_COLUMNS)}) IN (VALUES %s)",
        [_key_values(key) for key in keys],
        page_size=len(keys),
        fetch=True,
    )


def _insert(cursor: Any, batch: list[tuple[ResultKey, ClipResult]]) -> bool:
    columns = ", ".join((*_KEY_COLUMNS, "clip_key", *_VALUE_COLUMNS))
    rows = [(*_key_values(key), key.clip_key, *_result_values(result)) for key, result in batch]
    psycopg2.extras.execute_values(
        cursor,
        f"INSERT INTO {RESULTS_TABLE} ({columns}) VALUES %s ON CONFLICT DO NOTHING",
        rows,
    )
    return True


def _try_lock(cursor: Any, lock: int) -> bool:
    cursor.execute("SELECT pg_try_advisory_lock(%s)", (lock,))
    return cursor.fetchone()[0]


def _unlock(cursor: Any, locks: list[int]) -> bool:
    cursor.execute("SELECT pg_advisory_unlock(lock) FROM unnest(%s::bigint[]) AS lock", (locks,))
    return True


def _wait_lock(cursor: Any, lock: int) -> bool:
    cursor.execute("SELECT pg_advisory_lock(%s), pg_advisory_unlock(%s)", (lock, lock))
    return True


def _key_values(key: ResultKey) -> tuple[str, ...]:
    return tuple(getattr(key, name) for name in _KEY_COLUMNS)


def _result_values(result: ClipResult) -> tuple:
    return tuple(getattr(result, name) for name in _VALUE_COLUMNS)


def _lock_id(key: ResultKey) -> int:
    """A signed 64-bit advisory lock id for the key (a collision only serialises two clips)."""
    digest = hashlib.sha256("\0".join(_key_values(key)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
