"""Run a command under a subreaper and report what outlived it.

``python reaper.py STDERR_PATH WAIT_S -- COMMAND...`` makes itself the child subreaper
(``PR_SET_CHILD_SUBREAPER``), so every process the command starts, however deep, becomes its
child when orphaned instead of init's. It prints the command's pid, waits for the command, then
waits up to WAIT_S for every other descendant to end, kills any that remain, and prints one JSON
line: the command's exit status and the names of the processes that outlived it.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36
POLL_S = 0.05


def main() -> None:
    stderr_path, wait_s, _separator, *command = sys.argv[1:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    print(child.pid, flush=True)
    status = child.wait()
    survivors = _wait_for_descendants(time.monotonic() + float(wait_s))
    for process in survivors:
        process.kill()
    print(json.dumps({"exit": status, "outlived": [_describe(p) for p in survivors]}), flush=True)


def _wait_for_descendants(deadline: float) -> list[psutil.Process]:
    while True:
        _reap()
        alive = [p for p in psutil.Process().children(recursive=True) if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(POLL_S)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline()[:3])}"
    except psutil.Error:
        return str(process.pid)


if __name__ == "__main__":
    main()
