"""A real Ray cluster on this machine: a head and worker nodes, each its own ``ray start`` process.

Every node runs ``ray start --block`` in its own session, so the node's processes (raylet,
agents, actor workers) are that command's descendants: ``kill_node`` SIGKILLs exactly those, the
way a machine that loses power drops out of a cluster, and ``stop`` ends every node the same way.
The head has no CPUs, so clips go only to the worker nodes; each worker node has one CPU and a
resource named after it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

START_TIMEOUT_S = 120.0
START_ATTEMPTS = 2
OBJECT_STORE_BYTES = 80 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalRayCluster:
    """A head and ``worker_names`` nodes; ``address`` is what ``--ray-address`` takes."""

    def __init__(self, worker_names: tuple[str, ...] = ("node_a", "node_b")) -> None:
        self.worker_names = worker_names
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-"))  # short: socket paths are bounded
        self.nodes: dict[str, subprocess.Popen] = {}

    def start(self) -> LocalRayCluster:
        head_flags = [
            "--head",
            f"--port={self.port}",
            "--num-cpus=0",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={self.temp_dir}",
        ]
        self._start_node("head", head_flags)
        self._wait_for_port()
        for name in self.worker_names:
            self.start_worker(name)
        return self

    def start_worker(self, name: str) -> None:
        """Start one worker node and wait until it is alive. Nodes start one at a time, and a
        start is retried once: on a loaded machine Ray's fixed 30 s start-up wait can run out."""
        flags = [f"--address={self.address}", "--num-cpus=1", f'--resources={{"{name}": 1}}']
        # A node killed a moment ago may still be listed alive: only a new node id counts.
        stale = self.alive_node_ids(name) if name in self.nodes else set()
        for attempt in range(START_ATTEMPTS):
            self._start_node(name, flags)
            if self._wait_until_alive(name, stale, last_attempt=attempt == START_ATTEMPTS - 1):
                return

    def _wait_until_alive(self, name: str, stale: set[str], last_attempt: bool) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.nodes[name].poll() is not None:
                if last_attempt:
                    self._check_processes()
                return False
            if self.alive_node_ids(name) - stale:
                return True
            time.sleep(1.0)
        raise AssertionError(f"Ray worker node {name} did not join within {START_TIMEOUT_S} s")

    def alive_node_ids(self, name: str) -> set[str]:
        """Ids of the nodes holding resource ``name`` that the cluster lists as alive (this
        process joins the cluster once)."""
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
            except ConnectionError:  # the head is still starting (a loaded machine): ask again
                return set()
        return {
            node["NodeID"] for node in ray.nodes() if node["Alive"] and name in node["Resources"]
        }

    def ensure_workers(self) -> None:
        """Restart any worker node a test killed."""
        for name in self.worker_names:
            if self.nodes[name].poll() is not None:
                self.start_worker(name)

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's ``ray start`` and all it started: the node is lost at once."""
        process = self.nodes[name]
        _kill_tree(process.pid)
        process.wait(timeout=30)

    def stop(self) -> None:
        import ray

        ray.shutdown()
        for name in reversed(list(self.nodes)):
            if self.nodes[name].poll() is None:
                self.kill_node(name)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _start_node(self, name: str, flags: list[str]) -> None:
        log = open(self.temp_dir / f"{name}.log", "wb")  # noqa: SIM115 - the node owns it
        command = [
            _ray_binary(),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
            *flags,
        ]
        self.nodes[name] = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
        log.close()

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_processes()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        raise AssertionError(f"Ray head did not listen on {self.port} within {START_TIMEOUT_S} s")

    def _check_processes(self) -> None:
        for name, process in self.nodes.items():
            if process.poll() is not None:
                log = (self.temp_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"ray start for {name} exited:\n{log}")


def _kill_tree(pid: int) -> None:
    try:
        top = psutil.Process(pid)
        processes = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _ray_binary() -> str:
    return str(Path(sys.executable).with_name("ray"))
