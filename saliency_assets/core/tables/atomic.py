"""Files written atomically: readers see the old file or the whole new one, never a part.

A write goes to a hidden temp file in the same folder, is fsynced, then renamed over the target.
The new file gets the mode the umask gives (``0666 & ~umask``), or keeps the mode of the file it
replaces (``mkstemp``'s 0600 made shared outputs unreadable to their group). The temp name has a
short fixed length, so a valid target name never makes an invalid temp name; it is removed when
a write fails, and temp files of killed writers on this host are removed by the next write.

An ``s3://`` target is produced whole in memory and uploaded as one object
(:func:`filesystems.write_object`): S3 shows an object only once its upload completes, so a
failed write leaves the old object (or none), never a partial one.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from saliency_assets.core.tables import filesystems

# Temp files of atomic writes: ".sa-<host digest>-<pid>-<random>.tmp", at most 33 bytes
# whatever the target's name, so a valid output name never makes an invalid temp name.
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_NAME = re.compile(r"^\.sa-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]+\.tmp$")
# Versions before 2026-11-30 named them ".<target>.<host>.<pid>.<random>.tmp".
_LEGACY_HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_LEGACY_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


class WriteError(OSError):
    """An output could not be written; the message names the file and the reason."""


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temp file beside it; any failure is a ``WriteError`` naming
    ``path``, and leaves ``path`` as it was."""
    if filesystems.is_object(path):
        _upload_whole(path, write)
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        _write_and_rename(path, write)
    except OSError as error:
        raise WriteError(f"{path}: cannot write ({_reason(error, path)})") from None


def _upload_whole(location: Path | str, write: Callable[[BinaryIO], None]) -> None:
    try:
        filesystems.write_object(location, write)
    except OSError as error:  # its message names the object
        raise WriteError(" ".join(str(error).split())) from None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writers on this host whose process is gone; return them.

    Only names ``atomic_write`` makes are considered, and a live or unknown writer's file is
    kept, so a concurrent writer is never disturbed.
    """
    removed = []
    for name in os.listdir(folder):
        pid = _writer_on_this_host(name)
        if pid is not None and not _process_alive(pid):
            (Path(folder) / name).unlink(missing_ok=True)
            removed.append(Path(folder) / name)
    return removed


def _writer_on_this_host(name: str) -> int | None:
    """The process id in a temp file name made by this host's writers, else None."""
    for pattern, host in ((_TEMP_NAME, _HOST_TAG), (_LEGACY_TEMP_NAME, _LEGACY_HOST_TAG)):
        match = pattern.match(name)
        if match and match["host"] == host:
            return int(match["pid"])
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def temp_file_prefix(pid: int | None = None) -> str:
    """How the names of ``atomic_write``'s temp files start (this host, ``pid``)."""
    return f".sa-{_HOST_TAG}-{os.getpid() if pid is None else pid}-"


def _write_and_rename(path: Path, write: Callable[[BinaryIO], None]) -> None:
    descriptor, temp_path = _create_temp(path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            _keep_mode(path, handle.fileno())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        Path(temp_path).unlink(missing_ok=True)
        raise


def _create_temp(folder: Path) -> tuple[int, Path]:
    """A new hidden file opened for writing; created with mode 0666 so the umask applies
    (mkstemp's 0600 would make every output private)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        temp_path = folder / f"{temp_file_prefix()}{secrets.token_hex(4)}.tmp"
        try:
            return os.open(temp_path, flags, 0o666), temp_path
        except FileExistsError:
            continue


def _keep_mode(path: Path, descriptor: int) -> None:
    """A file that is replaced keeps its permission bits."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    try:
        os.fchmod(descriptor, mode)
    except OSError:  # a file system without modes (FAT, some network mounts): write anyway
        pass


def _reason(error: OSError, path: Path) -> str:
    """The cause of an I/O error on one line, without the ``[Errno N]`` prefix, naming the file
    in the way when it is another one (a file where a parent folder should be)."""
    reason = " ".join((error.strerror or str(error)).split())
    other = Path(os.fsdecode(error.filename)) if isinstance(error.filename, str | bytes) else None
    if other is not None and other != path and not _TEMP_NAME.match(other.name):
        reason += f": {other}"
    return reason
