"""Standard streams whose failures never decide a run's outcome.

Progress, warnings and summaries are for a reader; when that reader has gone (``2>&1 | head -1``,
a closed terminal, a full log disk) a write must not raise, or the run would stop before its
table or audit is written. The first failed write points the stream's descriptor at
``/dev/null``, as Python's documentation recommends for SIGPIPE, so whatever is still buffered
is flushed there at exit instead of printing "Exception ignored ... BrokenPipeError".
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# What a write to a stream whose reader left, or that was closed, raises.
_STREAM_FAILURES = (OSError, ValueError)


class LogStream:
    """A text stream that drops what it cannot write, silently, from the first failure on."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)
            except _STREAM_FAILURES:
                self._give_up()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except _STREAM_FAILURES:
                self._give_up()

    def isatty(self) -> bool:
        try:
            return not self.broken and self.stream.isatty()
        except (*_STREAM_FAILURES, AttributeError):
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def _give_up(self) -> None:
        self.broken = True
        _point_at_devnull(self.stream)


@contextmanager
def failure_proof_std_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` as ``LogStream`` for the duration of a command.

    A standard descriptor that was closed (``2>&-``) is opened on ``/dev/null`` first: else the
    next file opened (an output's temp file) would take its number and receive what any library
    or child process writes to stderr.
    """
    _open_closed_std_descriptors()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _wrapped(sys.stdout), _wrapped(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _open_closed_std_descriptors() -> None:
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != descriptor:
                os.dup2(devnull, descriptor)
                os.close(devnull)


def _wrapped(stream: TextIO | None) -> Any:
    if isinstance(stream, LogStream):
        return stream
    if stream is None:  # Python started with the descriptor closed: nothing reads it
        stream = open(os.devnull, "w")
    return LogStream(stream)


def _point_at_devnull(stream: TextIO) -> None:
    try:
        descriptor = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (*_STREAM_FAILURES, AttributeError):
        return  # not backed by a descriptor (a test's StringIO): dropping writes is enough
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)
