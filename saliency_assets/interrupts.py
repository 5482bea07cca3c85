"""Stopping on SIGINT, SIGTERM or SIGHUP: one line, the conventional status, no traceback.

The first signal becomes an ``Interrupted`` exception in the main thread, so the run unwinds
the ordinary way: the worker pool kills its workers and their ffmpeg processes, and the results
finished so far are saved to the results store on the way out. Signals that follow are ignored
while that clean-up finishes.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, the first stop signal raises ``Interrupted``; unless one did, the
    handlers in place before are put back after it. Outside the main thread (where Python
    cannot handle signals) the block runs with the signals as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    except Interrupted:
        raise  # on the way out: the signals that follow stay ignored
    except BaseException:
        _restore(previous)
        raise
    _restore(previous)


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _interrupt(signum: int, _frame: object) -> None:
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)
