"""Where a path lives: the local file system, or object storage for ``s3://bucket/key`` URIs.

Everything that reads or writes tables, audits, reports or clips asks here, so a location is
chosen by its URL and never taken for a folder: ``s3://b/k`` (also after ``pathlib.Path`` has
collapsed it to ``s3:/b/k``) is an object, anything else a local path. S3 is reached through
pyarrow's ``S3FileSystem`` configured from the standard AWS variables (``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, or
the SDK's other credential sources).

Objects are read by range (a seekable buffered reader over ranged GETs, never a whole download)
and written all-or-nothing: the content is produced in memory first, then uploaded; S3 makes an
object visible only once its upload completes, so a failed write leaves no partial object.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

S3_SCHEME = "s3://"
# Ranged GETs of this size serve sequential reads (demuxing, JSONL lines).
READ_BUFFER_BYTES = 1 << 20
AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
_S3_PREFIX = re.compile(r"^s3:/+")


@dataclass(frozen=True)
class ObjectInfo:
    """What a stat tells about an object: ``kind`` is ``file``, ``directory`` or ``missing``."""

    kind: str
    size: int = 0
    mtime_ns: int = 0


def object_uri(location: Any) -> str | None:
    """``s3://bucket/key`` when ``location`` names an S3 object (a str or a Path), else None."""
    if location is None:
        return None
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    match = _S3_PREFIX.match(text)
    return None if match is None else S3_SCHEME + text[match.end() :]


def is_object(location: Any) -> bool:
    return object_uri(location) is not None


def display(location: Any) -> str:
    """How a location is shown in messages: the URI for objects, the path otherwise."""
    return object_uri(location) or str(location)


def join(root: Any, relative: str) -> str:
    """``relative`` under the object root ``root``, normalised like a local path."""
    uri = object_uri(root)
    bucket_and_key = posixpath.normpath(posixpath.join(uri[len(S3_SCHEME) :], relative))
    return S3_SCHEME + bucket_and_key


def stat(location: Any) -> ObjectInfo:
    """Kind, size and modification time of an object or a local file."""
    uri = object_uri(location)
    if uri is None:
        return _local_stat(Path(location))
    import pyarrow.fs as pafs

    filesystem, key = _s3(uri)
    info = filesystem.get_file_info(key)
    if info.type == pafs.FileType.File:
        mtime_ns = int(info.mtime.timestamp() * 1e9) if info.mtime is not None else 0
        return ObjectInfo("file", info.size or 0, mtime_ns)
    if info.type == pafs.FileType.Directory:
        return ObjectInfo("directory")
    return ObjectInfo("missing")


def is_file(location: Any) -> bool:
    """Whether a file (or an object) is there; a store that cannot be reached says no."""
    if not is_object(location):
        return Path(location).is_file()
    try:
        return stat(location).kind == "file"
    except OSError:
        return False


def object_version(location: Any) -> str | None:
    """``etag:size:last-modified`` of the object at ``location``, as one HEAD request reports
    it: a rewrite gets a new ETag. None when the server reports no ETag. Raises OSError
    (FileNotFoundError when there is no such object)."""
    filesystem, key = _s3(object_uri(location))
    with filesystem.open_input_file(key) as native:  # opening it is the HEAD; nothing is read
        headers, size = native.metadata(), native.size()
    etag = headers.get("ETag", b"").decode().strip('"')
    modified = headers.get("Last-Modified", b"").decode()
    return f"{etag}:{size}:{modified}" if etag else None


def open_input(location: Any) -> BinaryIO:
    """A seekable binary reader; for objects, reads are ranged GETs of ``READ_BUFFER_BYTES``.

    Raises FileNotFoundError when there is no such object or file.
    """
    uri = object_uri(location)
    if uri is None:
        return open(location, "rb")  # noqa: SIM115 - the caller closes it
    filesystem, key = _s3(uri)
    if stat(uri).kind != "file":
        raise FileNotFoundError(f"{uri}: no such object")
    raw = _ArrowReader(filesystem.open_input_file(key))
    return io.BufferedReader(raw, buffer_size=READ_BUFFER_BYTES)


def write_object(location: Any, write: Callable[[BinaryIO], None]) -> None:
    """Produce the whole content with ``write`` in memory, then upload it as one object."""
    uri = object_uri(location)
    content = io.BytesIO()
    write(content)
    filesystem, key = _s3(uri)
    try:
        with filesystem.open_output_stream(key) as stream:
            stream.write(content.getbuffer())
    except OSError as error:
        raise OSError(f"{uri}: cannot be written ({error})") from None


def aws_environment() -> dict[str, str]:
    """The AWS variables set here, for processes that must reach the same object store."""
    return {name: os.environ[name] for name in AWS_ENV if os.environ.get(name)}


def _s3(uri: str) -> tuple[Any, str]:
    settings = tuple(os.environ.get(name) for name in AWS_ENV)
    return _s3_filesystem(settings), uri[len(S3_SCHEME) :]


@functools.lru_cache(maxsize=4)
def _s3_filesystem(settings: tuple[str | None, ...]) -> Any:
    """One S3FileSystem per set of AWS variables (the key of this cache)."""
    import pyarrow.fs as pafs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict[str, Any] = {"region": region}
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        options.update(endpoint_override=host or endpoint, scheme=scheme or "https")
    return pafs.S3FileSystem(**options)


def _local_stat(path: Path) -> ObjectInfo:
    try:
        found = path.stat()
    except FileNotFoundError:
        return ObjectInfo("missing")
    kind = "directory" if path.is_dir() else "file"
    return ObjectInfo(kind, found.st_size, found.st_mtime_ns)


class _ArrowReader(io.RawIOBase):
    """A pyarrow random-access file as a Python raw stream (for io.BufferedReader and PyAV)."""

    def __init__(self, native: Any) -> None:
        self.native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.native.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.native.seek(offset, whence)

    def tell(self) -> int:
        return self.native.tell()

    def close(self) -> None:
        if not self.closed:
            self.native.close()
        super().close()
