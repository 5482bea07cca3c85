"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS_ENV = "SALIENCY_ASSETS_SHARED_MODELS"


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """The folder holding the upstream saliency_student ONNX models.

    ``$SALIENCY_ASSETS_SHARED_MODELS`` when set, else ``<repo root>/../shared/models``; tests
    that need it are skipped, with the path in the reason, when the folder does not exist.
    """
    configured = os.environ.get(SHARED_MODELS_ENV)
    models_dir = Path(configured) if configured else REPO_ROOT.parent / "shared" / "models"
    if not models_dir.is_dir():
        pytest.skip(f"shared models folder {models_dir} not found (set {SHARED_MODELS_ENV})")
    return models_dir


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    """Run the installed ``saliency-assets`` command as a user would; return the result."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "saliency_assets.cli", *args]
    merged_env = {**os.environ, **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env=merged_env, timeout=300, check=False
    )


def run_cli_in_process(*args: str, cwd: Path | None = None, env: dict | None = None):
    """``run_cli`` without a new interpreter: the command's own ``main`` (same parsing, commands
    and exit status) in this process, its stdout and stderr captured; the result has
    ``returncode``, ``stdout`` and ``stderr`` as ``run_cli``'s has.

    A new process costs about a second of start-up and imports; tests of what only a process
    shows (signals, closed streams, memory limits, what outlives it) use ``run_cli``, and each
    command keeps tests through ``run_cli``. An exception out of ``main`` fails the test.
    """
    import io
    import subprocess

    from saliency_assets.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        _environment(env or {}),
        contextlib.chdir(cwd or Path.cwd()),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            returncode = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            returncode = exit_.code
    return subprocess.CompletedProcess(args, returncode, stdout.getvalue(), stderr.getvalue())


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """A folder of small real clips shared by the end-to-end tests."""
    from support.clips import make_clip, make_raw_yuv

    folder = tmp_path_factory.mktemp("clips")
    make_clip(folder / "clip.mp4", 64, 48, 10)
    make_clip(folder / "other.mp4", 96, 64, 10)
    make_clip(folder / "wide_540.mp4", 96, 54, 6)
    make_raw_yuv(folder / "raw_64x48.yuv", 64, 48, 6)
    return folder


@pytest.fixture(autouse=True)
def isolated_results_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own results store and fingerprint memo, also in the commands it runs."""
    cache = tmp_path / "results-cache"
    monkeypatch.setenv("SALIENCY_ASSETS_CACHE", str(cache))
    monkeypatch.setenv("SALIENCY_ASSETS_FINGERPRINT_MEMO", str(tmp_path / "fingerprints.sqlite"))
    return cache


@pytest.fixture
def dagster_instance(tmp_path):
    """A persistent temporary Dagster instance (sensors and schedules need one)."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


# The session-wide local servers (a Ray cluster, an S3 server) and the modules whose tests use
# them (checked at collection; the pytest-xdist scheduler, which collects nothing, reads it).
LOCAL_SERVER_FIXTURES = {"ray_cluster", "s3_bucket"}
LOCAL_SERVER_MODULES = {"test_object_storage.py", "test_ray_dagster.py", "test_ray_runner.py"}
_started_servers = pytest.StashKey[list]()
_worker_report_lines = pytest.StashKey[list]()


def pytest_collection_modifyitems(session, config, items):
    """The modules with tests on the local servers run first and together, the Ray tests last
    among them: the servers start once and stop after their last test
    (``pytest_runtest_teardown``) instead of idling beside the rest of the suite."""
    on_servers = {
        _module_file(item.nodeid)
        for item in items
        if LOCAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
    }
    if not on_servers <= LOCAL_SERVER_MODULES:
        raise pytest.UsageError(
            f"{sorted(on_servers - LOCAL_SERVER_MODULES)} use the local servers: add them to "
            "LOCAL_SERVER_MODULES in tests/conftest.py, so one pytest-xdist worker runs them all"
        )

    def order(item) -> tuple[bool, bool, bool]:
        on_ray = "ray_cluster" in getattr(item, "fixturenames", ())
        # a killed node is restarted once less
        return not _on_servers(item), on_ray, on_ray and "killed" in item.name

    items.sort(key=order)


@pytest.fixture
def pg_database():
    """A fresh database on the local PostgreSQL server for one test (skipped without one)."""
    from support.postgres import fresh_database

    with fresh_database(f"saliency_store_test_{os.getpid()}") as database:
        yield database


@pytest.fixture
def pg_url(pg_database) -> str:
    """The test's fresh database as the ``postgresql://`` URL a results store takes."""
    from support.postgres import database_url

    return database_url(pg_database)


@pytest.fixture
def postgres_instance(pg_database, tmp_path, monkeypatch):
    """A Dagster instance configured as a deployment's (``dagster-postgres.yaml``), in the
    test's fresh database: the one ``pg_url`` names, so a results store can share it."""
    pytest.importorskip("dagster_postgres")
    import dagster as dg
    from support.postgres import deployment_environment, write_dagster_home

    home = write_dagster_home(tmp_path / "dagster_home")
    for name, value in deployment_environment(pg_database).items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadscope`` (pyproject.toml's default with ``-n 2``) each module is one
    unit of work, so its module-scoped fixtures (one shared run that many tests assert on) run
    once; the local-server modules are one unit together, so each server starts once (two Ray
    clusters on one machine would also contend for its ports). That unit comes first, so it
    does not end the run with the other worker idle."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = _module_file(nodeid)
            return "local servers" if module in LOCAL_SERVER_MODULES else module

    return ModuleScheduling(config, log)


def _module_file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


def _on_servers(item) -> bool:
    return _module_file(item.nodeid) in LOCAL_SERVER_MODULES


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test on the local servers, stop them (their fixtures stop them again at
    the session's end, which does nothing then)."""
    yield
    if _on_servers(item) and (nextitem is None or not _on_servers(nextitem)):
        for server in item.config.stash.get(_started_servers, []):
            server.stop()


def _started(request, server):
    """``server``, kept to be stopped after its last test."""
    request.config.stash.setdefault(_started_servers, []).append(server)
    return server


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """A pytest-xdist worker ended: keep the report lines its tests wrote (support/bounded.py)."""
    from support.bounded import REPORT_LINES

    lines = node.config.stash.setdefault(_worker_report_lines, [])
    lines += getattr(node, "workeroutput", {}).get(REPORT_LINES, [])


def pytest_terminal_summary(terminalreporter, config) -> None:
    for line in config.stash.get(_worker_report_lines, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def ray_cluster_session(request):
    """One local Ray cluster (a head and worker nodes node_a, node_b) for the whole session;
    always torn down. Tests are skipped where the [ray] extra is not installed."""
    pytest.importorskip("ray")
    from support.ray_cluster import LocalRayCluster

    cluster = _started(request, LocalRayCluster())
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def ray_cluster(ray_cluster_session):
    """The session's Ray cluster with every worker node up (a test may have killed one)."""
    ray_cluster_session.ensure_workers()
    return ray_cluster_session


@pytest.fixture(scope="session")
def s3_server_session(request):
    """One local SeaweedFS S3 server for the whole session; always stopped."""
    from support.s3_server import LocalS3Server

    server = _started(request, LocalS3Server())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server_session, monkeypatch, request):
    """``bucket/prefix``: a place of this test's own on the local S3 server, with the AWS
    variables that reach it set."""
    from support.s3_server import BUCKET

    for name, value in s3_server_session.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return f"{BUCKET}/" + "".join(c for c in request.node.name.lower() if c.isalnum())
