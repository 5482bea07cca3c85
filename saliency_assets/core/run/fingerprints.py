"""Source fingerprints: BLAKE3 of every byte of a clip file, remembered on this host.

The fingerprint keys results in the store, so it must change whenever any byte changes and be
the same on every host: it is a digest of the content alone, prefixed with its algorithm
(``blake3:<hex>``; a store holding other fingerprints simply misses). BLAKE3 on one thread
hashes about twice as fast as SHA-256 here (benchmarks/fingerprint.py); one thread because the
parent hashes while the workers compute, and more threads would take their cores.

Hashing a 4K raw clip costs a sizeable share of its compute, so a small SQLite memo on this
host maps a file's identity and state (device, inode, size, mtime, ctime) to its digest, and a
rerun reads no unchanged file again. The kernel sets ctime on every change of content and on
every ``utime``, and no user tool can set it back, so an edit that restores size and mtime
still misses the memo. An object (``s3://``) is remembered by its URI and the version the
server reports (ETag, size, last-modified: one HEAD request), so a rerun reads no unchanged
object again and a rewritten one (a new ETag) is read anew. The memo only spares reading: it is
never part of a result key.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import TextIO

import blake3

from saliency_assets.core.tables import filesystems

ALGORITHM = "blake3"
MEMO_ENV = "SALIENCY_ASSETS_FINGERPRINT_MEMO"
# Read size; larger buffers gain nothing measurable (benchmarks/fingerprint.py).
READ_BYTES = 1 << 20
# A file changed this recently may change again within the same timestamp tick, unseen in its
# ctime (or on a server whose clock is a little off), so its digest is not remembered.
SETTLED_AFTER_NS = 2_000_000_000
_SCHEMA = "CREATE TABLE IF NOT EXISTS fingerprints (file TEXT PRIMARY KEY, state TEXT, digest TEXT)"


def hash_file(handle) -> str:
    """``blake3:<hex>`` of everything readable from the open binary ``handle``."""
    digest = blake3.blake3(max_threads=1)
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    while read := handle.readinto(buffer):
        digest.update(view[:read])
    return f"{ALGORITHM}:{digest.hexdigest()}"


def default_memo_path() -> Path | None:
    """``$SALIENCY_ASSETS_FINGERPRINT_MEMO`` (``none``: no memo), else
    ``$XDG_CACHE_HOME/saliency-assets/fingerprints.sqlite``."""
    configured = os.environ.get(MEMO_ENV)
    if configured:
        return None if configured == "none" else Path(configured)
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "saliency-assets" / "fingerprints.sqlite"


class FingerprintMemo:
    """Fingerprints of files, each read only when this host has not seen it in its current
    state. A memo that cannot be opened or written is warned about once and then not used:
    every file is read, nothing else changes."""

    def __init__(self, path: Path | None, log: TextIO | None = sys.stderr) -> None:
        self.path, self.log = path, log
        self._connection: sqlite3.Connection | None = None
        self.usable = path is not None

    def fingerprint(self, path: Path) -> str:
        """The fingerprint of the file at ``path`` (OSError if it cannot be read)."""
        if filesystems.is_object(path):
            return self._object_fingerprint(filesystems.object_uri(path))
        with open(path, "rb", buffering=0) as handle:
            before = os.fstat(handle.fileno())
            remembered = self._recall(_file(before), _state(before))
            if remembered is not None:
                return remembered
            started_ns = time.time_ns()
            fingerprint = hash_file(handle)
            after = os.fstat(handle.fileno())
        if _state(before) == _state(after) and started_ns - after.st_ctime_ns > SETTLED_AFTER_NS:
            self._remember(_file(after), _state(after), fingerprint)
        return fingerprint

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    def _object_fingerprint(self, uri: str) -> str:
        """Unlike a file's, an object's version needs no settling time: its ETag changes with
        any rewrite. Should it be rewritten while read, the digest is remembered under the old
        version, which no later HEAD reports again."""
        version = filesystems.object_version(uri) if self.usable else None
        remembered = self._recall(uri, version) if version else None
        if remembered is not None:
            return remembered
        with filesystems.open_input(uri) as handle:
            fingerprint = hash_file(handle)
        if version:
            self._remember(uri, version, fingerprint)
        return fingerprint

    def _recall(self, file: str, state: str) -> str | None:
        row = self._execute(
            "SELECT digest FROM fingerprints WHERE file = ? AND state = ?", file, state
        )
        digest = row[0] if row else None
        return digest if digest and digest.startswith(f"{ALGORITHM}:") else None

    def _remember(self, file: str, state: str, fingerprint: str) -> None:
        self._execute(
            "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?)", file, state, fingerprint
        )

    def _execute(self, statement: str, *values: str) -> tuple | None:
        if not self.usable:
            return None
        try:
            return self._connected().execute(statement, values).fetchone()
        except (sqlite3.Error, OSError) as error:
            self.usable = False
            self.close()
            if self.log is not None:
                print(
                    f"saliency: WARNING — fingerprint memo {self.path}: {error}; every clip file "
                    "is read to fingerprint it",
                    file=self.log,
                )
            return None

    def _connected(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._connection = _open(self.path)
            except sqlite3.DatabaseError as error:
                if type(error) is not sqlite3.DatabaseError:  # locked, read-only: not damage
                    raise
                # Not a database (damaged): set it aside like a damaged store part, start anew.
                os.replace(self.path, self.path.with_name(self.path.name + ".damaged"))
                self._connection = _open(self.path)
        return self._connection


def _open(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:  # a cache: losing the last writes to a crash costs a re-read, no more
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute(_SCHEMA)
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _file(stat: os.stat_result) -> str:
    return f"{stat.st_dev}:{stat.st_ino}"


def _state(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
