"""The shared results store in PostgreSQL (``--results-store postgresql://…``), against the local
server that ``scripts/ci-services.sh`` starts: created on first use with its schema version,
concurrent writers safe, and two concurrent runs over one corpus compute each clip once.

Skipped, with the reason, when no PostgreSQL server accepts connections on
``$PGHOST:$PGPORT`` (default 127.0.0.1:5432).
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from pathlib import Path

from conftest import run_cli
from dagster_support import (
    check_metadata,
    load_defs,
    range_tags,
    run_job,
    write_corpus,
    write_manifest,
)
from support.bounded import start_command, write_report_line
from support.clips import make_clip
from support.postgres import query
from test_engine import CountingRunner

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.manifests import load_manifest
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.model.saliency_model import choose_model
from saliency_assets.core.run.engine import compute_clips
from saliency_assets.core.run.pg_store import META_TABLE, RESULTS_TABLE, open_store
from saliency_assets.core.run.results_store import ResultKey, result_keys

CLIPS = 8
OK = ClipResult("ok", 0.5, 0.125, None, 3, 64, 48)


def test_created_on_first_use_with_its_schema_version(pg_url):
    store = open_store(pg_url, log=None)
    key = ResultKey(".mp4", "sha256:ab", "m" * 64, "s" * 16, "clips/a.mp4")
    assert store.lookup_many([key]) == {}
    assert store.save([(key, OK)]) == 0
    assert open_store(pg_url).save([(key, ClipResult("ok", 0.9, 0.1))]) == 0  # first one stays
    assert open_store(pg_url).lookup_many([key, ResultKey(".mp4", "x", "m", "s")]) == {key: OK}
    assert query(pg_url, f"SELECT value FROM {META_TABLE}") == [("1",)]
    assert query(pg_url, f"SELECT clip_key FROM {RESULTS_TABLE}") == [("clips/a.mp4",)]


def test_another_schema_version_is_one_warning_and_no_reuse(pg_url):
    open_store(pg_url, log=None).lookup_many([ResultKey(".mp4", "f", "m", "s")])
    query(pg_url, f"UPDATE {META_TABLE} SET value = '99' RETURNING value")
    log = io.StringIO()
    store = open_store(pg_url, log)
    key = ResultKey(".mp4", "f", "m", "s")
    assert store.lookup_many([key]) == {}
    assert store.save([(key, OK)]) == 1
    (warning,) = log.getvalue().splitlines()
    assert "schema version is 99" in warning


def test_a_manifest_keeps_a_postgresql_url_as_it_is(tmp_path, pg_url):
    entry = {"id": "t", "input": "in.jsonl", "output": "out.jsonl", "results_store": pg_url}
    (tmp_path / "m.json").write_text(json.dumps({"tables": [entry]}))
    (table,) = load_manifest(tmp_path / "m.json").tables
    assert table.config.results_store == pg_url


def test_an_unreachable_server_is_one_warning_and_the_table_is_written(tmp_path):
    make_clip(tmp_path / "a.mp4", 64, 48, 3)
    (tmp_path / "in.jsonl").write_text(json.dumps({"src": "a.mp4"}) + "\n")
    url = "postgresql://nobody:secret@127.0.0.1:9/nowhere"
    done = run_cli(
        "materialize", "--input", str(tmp_path / "in.jsonl"), "--output",
        str(tmp_path / "out.jsonl"), "--root", str(tmp_path), "--results-store", url,
        "--audit-json", str(tmp_path / "audit.json"), "--max-frames", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert "127.0.0.1:9" in warning and "secret" not in warning
    assert json.loads((tmp_path / "audit.json").read_text())["unstored_clips"] == 1


def test_two_concurrent_runs_compute_each_clip_once(tmp_path, pg_url, request):
    clips = tmp_path / "clips"
    clips.mkdir()
    for index in range(CLIPS):
        make_clip(clips / f"clip{index}.mp4", 640 + 16 * index, 360, 12)
    table = tmp_path / "in.jsonl"
    table.write_text("".join(json.dumps({"src": f"clip{i}.mp4"}) + "\n" for i in range(CLIPS)))
    runs = []
    for name in ("first", "second"):
        args = [
            "materialize", "--input", str(table), "--output", str(tmp_path / f"{name}.jsonl"),
            "--root", str(clips), "--results-store", pg_url, "--jobs", "1",
            "--max-frames", "8", "--audit-json", str(tmp_path / f"{name}.json"),
        ]  # fmt: skip
        runs.append(start_command(args, cwd=tmp_path))
    try:
        assert [process.wait(timeout=300) for process in runs] == [0, 0]
    finally:
        for process in runs:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    audits = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("first", "second")]
    computed = [audit["clips"] - audit["reused_clips"] for audit in audits]
    write_report_line(request, f"two concurrent runs over {CLIPS} clips computed {computed}")
    assert sum(computed) == CLIPS, computed
    assert (tmp_path / "first.jsonl").read_text() == (tmp_path / "second.jsonl").read_text()
    assert query(pg_url, f"SELECT count(*) FROM {RESULTS_TABLE}") == [(CLIPS,)]


def test_dagster_and_the_command_share_the_postgresql_store(
    tmp_path, pg_url, dagster_instance, monkeypatch
):
    """Clips materialized by Dagster into the manifest's PostgreSQL store are reused by the CLI."""
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path, results_store=pg_url))
    run_job(defs, "saliency_t_refresh", dagster_instance)
    clips = run_job(defs, "saliency_t_clips", dagster_instance, tags=range_tags("a.mp4", "c.mp4"))
    assert len(clips.get_asset_materialization_events()) == 3  # one per clip partition
    assert check_metadata(clips, "status_contract")["computed_clips"] == 3
    assert query(pg_url, f"SELECT count(*) FROM {RESULTS_TABLE}") == [(3,)]
    enriched = run_job(defs, "saliency_t_enrich", dagster_instance)
    assert enriched.success
    done = run_cli(
        "materialize", "--input", str(tmp_path / "features.jsonl"), "--output",
        str(tmp_path / "cli.jsonl"), "--root", str(tmp_path / "clips"), "--max-frames", "2",
        "--results-store", pg_url, "--audit-json", str(tmp_path / "cli-audit.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "cli-audit.json").read_text())["reused_clips"] == 3
    assert (tmp_path / "cli.jsonl").read_text() == (
        tmp_path / "out" / "features.saliency.jsonl"
    ).read_text()


def test_a_clip_claimed_by_a_run_that_dies_is_computed_by_the_waiting_run(tmp_path, pg_url):
    """Another run holds the claim on one clip and dies without storing it: this run computes
    its other clip, waits for the claim, then computes the orphaned clip itself."""
    clips = {}
    for name in ("held.mp4", "free.mp4"):
        (tmp_path / name).write_bytes(name.encode() * 100)
        clips[str(tmp_path / name)] = ClipSource(tmp_path / name)
    config, model = MaterializeConfig(), choose_model(None, None)
    keys = result_keys(clips, config, model.sha256)
    other_run = open_store(pg_url, log=None)
    assert other_run.claim(keys[str(tmp_path / "held.mp4")])
    dies = threading.Timer(1.0, other_run._connection.close)  # the server drops its locks
    dies.start()
    runner = CountingRunner(OK)
    computed = compute_clips(clips, config, model, runner, open_store(pg_url), io.StringIO())
    dies.join()
    assert [Path(key).name for key, _source in runner.tasks] == ["free.mp4", "held.mp4"]
    assert computed.results == {key: OK for key in clips}
    assert query(pg_url, f"SELECT count(*) FROM {RESULTS_TABLE}") == [(2,)]
