"""Stopping on SIGINT, SIGTERM or SIGHUP: one line, the conventional status, no traceback.

The first signal becomes an ``Interrupted`` exception in the main thread, so the run unwinds
the ordinary way: the worker pool kills its workers and their ffmpeg processes, and the results
finished so far are saved to the results store on the way out. Signals that follow are ignored
while that clean-up finishes.
"""

from __future__ import annotations

import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; unwinds like Ctrl-C, which code that cleans up already expects."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + self.signum

    def report(self, prog: str) -> int:
        """Print the one line that says so; return the exit status."""
        print(f"{prog}: interrupted ({self.signal_name})", file=sys.stderr)
        return self.exit_code


def raise_on_stop_signals() -> None:
    """Turn the first stop signal into ``Interrupted`` (call from the main thread)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, _frame: object) -> None:
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)
