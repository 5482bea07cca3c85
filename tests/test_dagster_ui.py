"""The Dagster UI, driven by headless Chromium: find the demo assets, materialize one from it,
open a clip's partition page and find that clip's value.

``dagster-webserver`` and ``dagster-daemon`` (the repository's ``dagster.yaml`` queues runs, so
the daemon launches them, as under ``dg dev``) serve ``workspace.yaml`` over a temporary
DAGSTER_HOME and a manifest over a freshly generated demo corpus. Playwright drives Debian's
Chromium (``/usr/bin/chromium``, or ``$CHROMIUM_BIN``); nothing is downloaded at test time.
Screenshots land in the test's tmp folder (their paths are printed and named in failures).

Skipped, with the reason, only when Playwright or Chromium is missing. To install both:
``apt-get install -y chromium`` and ``pip install playwright==1.65.2`` (never
``playwright install``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from support.services import Service, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
CHROMIUM = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
TABLE = "demo"
ASSETS = ("source_table", "clip_saliency", "enriched_table")
SOURCE_TABLE = dg.AssetKey(["saliency", TABLE, "source_table"])
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 90
UI_TIMEOUT_MS = 45_000


@pytest.fixture
def sync_playwright():
    """Playwright's sync entry point, or a skip naming what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright==1.65.2)")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium, or set CHROMIUM_BIN)")
    return sync_playwright


def write_demo_manifest(folder: Path) -> Path:
    """The demo corpus (four real clips, one missing) and a manifest over it, like demo.json."""
    from saliency_assets.demo import generate_demo_corpus

    generate_demo_corpus(folder)
    manifest = folder / "manifest.json"
    entry = {
        "id": TABLE,
        "input": "features.jsonl",
        "output": "out/features.saliency.jsonl",
        "root": "clips",
        "max_frames": 4,
        "frame_samples": 4,
        "dagster": {"clips_per_run": 0, "allow_row_failures": True, "sensor_interval_s": 3600},
    }
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


@dataclass
class Dagster:
    base_url: str
    instance: dg.DagsterInstance
    services: list[Service]


@pytest.fixture
def dagster_ui(sync_playwright, tmp_path, monkeypatch):
    """Webserver and daemon over a temporary instance (skipped first if no browser)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("SALIENCY_ASSETS_MANIFESTS", str(write_demo_manifest(tmp_path / "corpus")))
    port = free_port()
    services = [
        Service(
            "dagster-webserver",
            ["-w", str(WORKSPACE), "-p", str(port), "-h", "127.0.0.1"],
            tmp_path / "webserver.log",
        ),
        Service("dagster-daemon", ["run", "-w", str(WORKSPACE)], tmp_path / "daemon.log"),
    ]
    # Create the SQLite storage here first: two processes initialising it at once can race.
    with dg.DagsterInstance.get() as instance:
        try:
            for service in services:
                service.start()
            base = f"http://127.0.0.1:{port}"
            wait_until_serving(base, services)
            yield Dagster(base, instance, services)
        finally:
            for service in services:
                service.stop()


def wait_until_serving(base: str, services: list[Service]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        for service in services:
            service.check_alive()
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"dagster-webserver did not answer {base}/server_info within "
                f"{START_TIMEOUT_S} s\n{services[0].log_tail()}"
            )
        time.sleep(0.5)


def wait_for_run(instance, run_id: str, services: list[Service], timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        for service in services:
            service.check_alive()
        if time.monotonic() > deadline:
            status = None if run is None else run.status.value
            tails = "\n".join(service.log_tail() for service in services)
            raise AssertionError(f"run {run_id} still {status} after {timeout_s:.0f} s\n{tails}")
        time.sleep(1)


def test_materialize_the_demo_source_table_from_the_ui(dagster_ui, sync_playwright, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            # A fresh instance greets the first visit with a "Join the Dagster community"
            # dialog; dismiss it whenever it covers what the test clicks.
            skip = page.get_by_role("button", name="Skip", exact=True)
            page.add_locator_handler(skip, lambda: skip.click())
            try:
                materialize_from_the_ui(page, dagster_ui, shots)
            except Exception:
                page.screenshot(path=str(shots / "failure.png"))
                for service in dagster_ui.services:
                    print(service.log_tail())
                raise
            finally:
                print(f"screenshots: {shots}")
        finally:
            browser.close()


def materialize_from_the_ui(page, dagster_ui: Dagster, shots: Path) -> None:
    base, instance = dagster_ui.base_url, dagster_ui.instance
    run_id = launch_from_the_ui(page, base, shots)
    run = wait_for_run(instance, run_id, dagster_ui.services, RUN_TIMEOUT_S)
    assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run_id} ended {run.status.value}"
    assert run.asset_selection == {SOURCE_TABLE}
    assert instance.get_dynamic_partitions(f"saliency_{TABLE}_clips") == [
        "drift_h264.mp4",
        "drift_portrait_h264.mp4",
        "drift_vp9.mkv",
        "drift_mpeg4.mp4",
    ]
    # The UI shows the finished run, and the materialization with its metadata.
    page.goto(f"{base}/runs/{run_id}")
    page.get_by_text("Success", exact=True).first.wait_for()
    page.screenshot(path=str(shots / "run.png"))
    page.goto(f"{base}/assets/saliency/{TABLE}/source_table?view=events")
    page.get_by_text("unique_clips").first.wait_for()
    page.screenshot(path=str(shots / "events.png"))
    open_a_clip_partition(page, base, instance, shots)


def open_a_clip_partition(page, base: str, instance, shots: Path) -> None:
    """A clip's partition page shows that clip's own status and value, not its batch's."""
    from saliency_assets.definitions import build_definitions

    clip = "drift_vp9.mkv"
    tags = {
        "dagster/asset_partition_range_start": "drift_h264.mp4",
        "dagster/asset_partition_range_end": "drift_mpeg4.mp4",
    }
    job = build_definitions().resolve_job_def(f"saliency_{TABLE}_clips")
    result = job.execute_in_process(instance=instance, tags=tags)
    (event,) = [e for e in result.get_asset_materialization_events() if e.partition == clip]
    value = event.materialization.metadata["saliency_mean"].value
    shown = {f"{value:.2f}", f"{int(value * 100) / 100:.2f}"}  # rounded or cut by the UI
    page.goto(f"{base}/assets/saliency/{TABLE}/clip_saliency?view=partitions&partition={clip}")
    page.get_by_text("saliency_mean", exact=True).first.wait_for()
    page.get_by_text(re.compile("|".join(re.escape(text) for text in shown))).first.wait_for()
    page.screenshot(path=str(shots / "clip_partition.png"))


def launch_from_the_ui(page, base: str, shots: Path) -> str:
    """Find the demo assets in the catalog, press source_table's Materialize; return the run id."""
    page.goto(f"{base}/assets")
    for name in ASSETS:  # long names are truncated in the middle: find the links instead
        page.locator(f'a[href*="/assets/saliency/{TABLE}/{name}"]').first.wait_for()
    page.screenshot(path=str(shots / "catalog.png"))

    page.goto(f"{base}/assets/saliency/{TABLE}/source_table")
    materialize = page.locator("button", has_text=re.compile(r"^\s*Materialize\s*$"))
    materialize.wait_for()
    with page.expect_response(_is_launch_mutation) as response_info:
        materialize.click()
    launched = response_info.value.json()["data"]["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", f"the UI's launch failed: {launched}"
    run_id = launched["run"]["id"]
    page.get_by_text(f"Launched run {run_id[:8]}").wait_for()
    page.wait_for_timeout(500)  # let the toast finish fading in
    page.screenshot(path=str(shots / "launched.png"))
    return run_id


def _is_launch_mutation(response) -> bool:
    request = response.request
    return (
        request.method == "POST"
        and "/graphql" in request.url
        and '"LaunchPipelineExecution"' in (request.post_data or "")
    )
