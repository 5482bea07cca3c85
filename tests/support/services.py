"""Long-running Dagster commands (webserver, daemon) for integration tests.

Each runs in its own process group with its output in a log file; ``stop()`` ends the whole
group (the command, its code servers and run workers), so no test leaves processes behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """A Dagster command in its own process group, logging to a file; stop() kills the group."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        executable = Path(sys.executable).with_name(name)
        self.command = [str(executable) if executable.exists() else name, *args]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"{self.command[0]} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return f"(no log at {self.log_path})"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log_path.name} ---\n" + "\n".join(text)

    def stop(self) -> None:
        """SIGTERM the group (service, its code server, run workers), SIGKILL after 15 s."""
        if self.process is None:
            return
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children left in the group after the service itself exited
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
