"""Run the real ``saliency-assets`` command as a user would, but bounded and watched.

Every process the command starts (the CLI, the forkserver, the clip workers, ffmpeg) inherits an
address-space limit (``RLIMIT_AS``), the whole command has a wall-clock limit after which all its
processes are killed, and the run records its exit status, output, time, peak memory and
whether any of its processes outlived it. The command runs in a session of its own, which holds
every process it starts, also the binaries it runs in process groups of their own. Memory is
sampled from /proc for every process of its session at each poll: the largest single process
(``VmHWM``, its own high-water mark since exec) and the largest sum of the session's resident
sets. (``ru_maxrss`` would not do: on Linux a
child's counts the RSS of the test process it was forked from.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MEMORY_LIMIT_BYTES = 2 * 1024**3
COMMAND_TIMEOUT_S = 120.0
POLL_S = 0.02
SAMPLE_EVERY_S = 0.1
LEFTOVER_GRACE_S = 5.0
TRACEBACK = "Traceback (most recent call last)"
# Sets the limit in the command's own process, so its children inherit it, then runs the CLI.
_LAUNCHER = (
    "import resource, sys\n"
    "limit = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "from saliency_assets.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@dataclass
class CommandRun:
    """What one bounded command did. ``returncode`` is None when it was killed as hung."""

    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mib: float  # the largest single process of the command
    peak_tree_mib: float  # the largest sampled sum over all its processes
    left_processes: bool = False

    @property
    def hung(self) -> bool:
        return self.returncode is None

    @property
    def crashed(self) -> bool:
        """A traceback, a signal, or an exit status the CLI does not define (0, 1, 2)."""
        return not self.hung and (TRACEBACK in self.stderr or self.returncode not in (0, 1, 2))

    def describe(self) -> str:
        return (
            f"saliency-assets {' '.join(self.args)}\n-> exit {self.returncode} in "
            f"{self.seconds:.1f} s, peak RSS {self.peak_rss_mib:.0f} MiB per process, "
            f"{self.peak_tree_mib:.0f} MiB in all\n{self.stderr[-3000:]}"
        )


def start_command(
    args: Iterable[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: int | object = subprocess.DEVNULL,
    stdout: int | object = subprocess.DEVNULL,
    stderr: int | object = subprocess.DEVNULL,
    memory_limit: int = MEMORY_LIMIT_BYTES,
) -> subprocess.Popen:
    """Start the command in its own session (so it can be found and killed as a whole)."""
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(memory_limit), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def run_command(
    args: Iterable[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin_path: Path | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
    memory_limit: int = MEMORY_LIMIT_BYTES,
) -> CommandRun:
    """Run the command to completion or to ``timeout_s``; never raises for what it did."""
    args = [str(arg) for arg in args]
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(stdin_path or os.devnull, "rb") as stdin,
    ):
        started = time.monotonic()
        process = start_command(
            args, cwd=cwd, env=env, stdin=stdin, stdout=out, stderr=err, memory_limit=memory_limit
        )
        memory = MemorySampler(process.pid)
        status = _wait(process.pid, started + timeout_s, memory)
        seconds = time.monotonic() - started
        hung = status is None
        if hung:
            status = _kill_group(process.pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        left = _outlived(process.pid)
        out.seek(0), err.seek(0)
        return CommandRun(
            args,
            None if hung else process.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            seconds,
            memory.peak_process_mib,
            memory.peak_total_mib,
            left,
        )


class MemorySampler:
    """Peak memory of a session, sampled from /proc: its members are looked up every
    ``SAMPLE_EVERY_S``, their memory read at every call."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.peak_process_mib = 0.0
        self.peak_total_mib = 0.0
        self._members: list[int] = []
        self._listed_at = -SAMPLE_EVERY_S

    def sample(self) -> None:
        now = time.monotonic()
        if now - self._listed_at >= SAMPLE_EVERY_S:
            self._members, self._listed_at = group_members(self.group), now
        total = 0.0
        for pid in self._members:
            rss, hwm = _memory_of(pid)
            total += rss
            self.peak_process_mib = max(self.peak_process_mib, hwm)
        self.peak_total_mib = max(self.peak_total_mib, total)


def group_members(group: int) -> list[int]:
    """Live (not zombie) processes of the session ``group`` leads, from /proc (every process
    group the command's processes made, not only its first one)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[3]) == group and fields[0] != "Z":  # state ppid pgrp session
            members.append(int(entry))
    return members


def _memory_of(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MiB; zeros once it is gone."""
    values = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0, 0.0
    for line in lines:
        name, *rest = line.split()
        if name in values:
            values[name] = int(rest[0]) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def _wait(pid: int, deadline: float, memory: MemorySampler):
    while time.monotonic() < deadline:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited:
            return status
        memory.sample()
        time.sleep(POLL_S)
    return None


def _kill_group(pid: int):
    _kill_members(pid)
    return os.waitpid(pid, 0)[1]


def _kill_members(group: int) -> None:
    for member in group_members(group):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _outlived(group: int) -> bool:
    """Whether processes of the command's group are still alive a while after it exited
    (they are killed either way, so nothing leaks past the test)."""
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while time.monotonic() < deadline:
        if not _group_alive(group):
            return False
        time.sleep(0.05)
    _kill_members(group)
    return True


def _group_alive(group: int) -> bool:
    return bool(group_members(group))


@dataclass
class Ledger:
    """Counts what a test module ran, for one summary line at its end."""

    title: str
    cases: int = 0
    runs: list[CommandRun] = field(default_factory=list)
    altered_rows: int = 0
    in_process: int = 0  # cases that called main in the test process, not a bounded command

    def record(self, run: CommandRun) -> CommandRun:
        self.runs.append(run)
        return run

    def summary(self) -> str:
        crashes = sum(run.crashed for run in self.runs)
        hangs = sum(run.hung for run in self.runs)
        leftovers = sum(run.left_processes for run in self.runs)
        peak = max((run.peak_rss_mib for run in self.runs), default=0.0)
        tree = max((run.peak_tree_mib for run in self.runs), default=0.0)
        return (
            f"{self.title}: {self.cases} cases through {len(self.runs)} commands and "
            f"{self.in_process} calls of main; "
            f"crashes {crashes}, hangs {hangs}, leftover processes {leftovers}, "
            f"lost or altered rows {self.altered_rows}; peak RSS {peak:.0f} MiB per process, "
            f"{tree:.0f} MiB per command (address space capped at "
            f"{MEMORY_LIMIT_BYTES // 1024**2} MiB per process)"
        )


REPORT_LINES = "saliency_report_lines"  # the key in a pytest-xdist worker's output


def write_report_line(request, line: str) -> None:
    """Print ``line`` in pytest's terminal output, past output capturing. A pytest-xdist worker
    prints nothing: it hands the line to the controller, which prints it in its summary
    (``pytest_testnodedown`` and ``pytest_terminal_summary`` in conftest.py)."""
    worker_output = getattr(request.config, "workeroutput", None)
    if worker_output is not None:
        worker_output.setdefault(REPORT_LINES, []).append(line)
        return
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)
