"""A one-line progress display for terminals: clips done / total, rate, failures."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_INTERVAL_S = 0.5


class Progress:
    """Redraws in place on a terminal; silent when the stream is not one (logs, CI, pipes)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, label: str = "clips") -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.label = label
        self.stream = stream
        self.enabled = total > 0 and _is_terminal(stream)
        self._started = time.monotonic()
        self._drawn_at = 0.0

    def advance(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        now = time.monotonic()
        if self.enabled and (now - self._drawn_at >= REDRAW_INTERVAL_S or self.done == self.total):
            self._draw(now)

    def finish(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        self.stream.write(
            f"\r{self.label} {self.done}/{self.total}  {rate:.2f}/s  failed {self.failed}"
        )
        self.stream.flush()
        self._drawn_at = now


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
