"""Clips computed on a real Ray cluster of separate ``ray start`` nodes on this machine."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.parquet as pq
import pytest
from conftest import run_cli
from support.clips import make_clip
from support.postgres import query
from support.s3_server import put

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.statuses import DECODE_FAILED, OK
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.run.engine import compute_clips, materialize_rows, prepare_model
from saliency_assets.core.run.pg_store import RESULTS_TABLE, open_store
from saliency_assets.core.run.ray_runner import RayRunner
from saliency_assets.core.run.results_store import ResultStore, is_transient, result_keys

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, clip_dir):
    """Ten small real clips, no two alike (a store keys results by content), a raw .yuv from
    clip_dir, and one row per clip."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    for index in range(10):
        make_clip(folder / f"clip{index}.mp4", 64 + 16 * (index % 3), 48, 4 + index % 4)
    (folder / "raw_64x48.yuv").write_bytes((clip_dir / "raw_64x48.yuv").read_bytes())
    names = sorted(path.name for path in folder.iterdir())
    return folder, [{"src": name} for name in names]


def local_values(rows, config):
    model = prepare_model(config)
    outcome = materialize_rows(rows, config, model)
    return {row["src"]: row for row in outcome.rows}


def assert_equal_to_local(rows, local):
    for row in rows:
        expected = local[row["src"]]
        assert row["saliency_status"] == OK, row
        for column in ("saliency_mean", "saliency_var"):
            assert math.isclose(row[column], expected[column], rel_tol=0, abs_tol=TOLERANCE)


def test_clips_spread_over_both_nodes_and_equal_a_local_run(ray_cluster, corpus):
    root, rows = corpus
    config = MaterializeConfig(root=root, max_frames=4, jobs=1)
    ray_config = MaterializeConfig(root=root, max_frames=4, ray_address=ray_cluster.address)
    runner = RayRunner(ray_config, prepare_model(ray_config))

    outcome = materialize_rows(rows, ray_config, prepare_model(ray_config), runner=runner)

    assert_equal_to_local(outcome.rows, local_values(rows, config))
    assert len(runner.stats.clips_by_node) == 2
    assert sum(runner.stats.clips_by_node.values()) == len(rows)


class Place(NamedTuple):
    """Where a run reads its clips and keeps its results (a folder, or a PostgreSQL URL)."""

    clip_root: str
    store: Any
    store_location: Path | str

    def stored_clip_keys(self) -> list[str]:
        if isinstance(self.store_location, Path):
            return pq.read_table(self.store_location).column("clip_key").to_pylist()
        sql = f"SELECT clip_key FROM {RESULTS_TABLE}"
        return [key for (key,) in query(self.store_location, sql)]


@pytest.fixture(params=["local-folder-store", "s3-postgresql-store"])
def place(request, corpus, tmp_path):
    """The corpus's folder and a results folder, or the production shape: a copy of the
    corpus on the local S3 server and the results store in the local PostgreSQL."""
    root, _rows = corpus
    if request.param == "local-folder-store":
        return Place(str(root), ResultStore(tmp_path / "store"), tmp_path / "store")
    prefix = f"s3://{request.getfixturevalue('s3_bucket')}/clips"
    for clip in root.iterdir():
        put(f"{prefix}/{clip.name}", clip.read_bytes())
    url = request.getfixturevalue("pg_url")
    return Place(prefix, open_store(url), url)


def test_a_worker_node_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    ray_cluster, corpus, place
):
    local_root, rows = corpus
    config = MaterializeConfig(root=place.clip_root, max_frames=4, ray_address=ray_cluster.address)
    model = prepare_model(config)
    ray_runner = RayRunner(config, model)

    def kill_node_b_after_the_first_clip(tasks):
        for count, finished in enumerate(ray_runner(tasks)):
            yield finished
            if count == 0:
                ray_cluster.kill_node("node_b")

    clips = {row["src"]: _source(place.clip_root, row) for row in rows}
    computed = compute_clips(
        clips, config, model, runner=kill_node_b_after_the_first_clip, store=place.store
    )

    assert {result.status for result in computed.results.values()} == {OK}
    assert ray_runner.stats.retried_clips >= 1
    assert sorted(place.stored_clip_keys()) == sorted(clips)
    local_clips = {row["src"]: _source(local_root, row) for row in rows}
    local = compute_clips(local_clips, MaterializeConfig(max_frames=4, jobs=1), model).results
    for src, result in computed.results.items():
        assert math.isclose(result.saliency_mean, local[src].saliency_mean, abs_tol=TOLERANCE)
        assert math.isclose(result.saliency_var, local[src].saliency_var, abs_tol=TOLERANCE)


def test_actors_start_only_for_clips_the_store_does_not_hold(
    ray_cluster, corpus, tmp_path, monkeypatch
):
    """One clip of eleven to compute on a two-CPU cluster: one actor. None stored: the
    cluster is not even joined."""
    from saliency_assets.core.run import ray_runner

    root, rows = corpus
    config = MaterializeConfig(root=root, max_frames=4, ray_address=ray_cluster.address)
    model = prepare_model(config)
    clips = {row["src"]: _source(root, row) for row in rows}
    store = ResultStore(tmp_path / "store")
    new_clip, *stored_clips = clips
    keys = result_keys(clips, config, model.sha256)
    store.save([(keys[src], ClipResult(OK, 0.5, 0.125, None, 4, 64, 48)) for src in stored_clips])

    one_to_compute = RayRunner(config, model)
    first = compute_clips(clips, config, model, runner=one_to_compute, store=store)
    joins = []
    monkeypatch.setattr(ray_runner, "connect", joins.append)
    none_to_compute = RayRunner(config, model)
    again = compute_clips(clips, config, model, runner=none_to_compute, store=store)

    assert (first.results[new_clip].status, first.reused) == (OK, len(stored_clips))
    assert one_to_compute.stats.actors_started == 1
    assert (again.reused, none_to_compute.stats.actors_started, joins) == (len(clips), 0, [])


def test_cli_says_ray_is_missing_before_any_work(tmp_path, corpus):
    root, _rows = corpus
    table = tmp_path / "features.jsonl"
    table.write_text(json.dumps({"src": "clip0.mp4"}) + "\n")
    hide_ray = (
        "import sys; sys.modules['ray'] = None; from saliency_assets.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            hide_ray,
            "materialize",
            "--input",
            str(table),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--root",
            str(root),
            "--ray-address",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert "pip install 'saliency-assets[ray]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def _source(root, row):
    from saliency_assets.core.tables.sources import resolve_clip

    return resolve_clip(row, MaterializeConfig(root=root))


def test_gpu_actors_share_a_gpu_and_cpu_actors_ask_for_none(monkeypatch):
    from pathlib import Path

    from saliency_assets.core.model.clip_saliency import ClipJob
    from saliency_assets.core.run.ray_runner import ACTORS_PER_GPU, _actor_options

    def options(providers):
        config = MaterializeConfig(providers=providers)
        return _actor_options(ClipJob.from_config(config, Path("model.onnx")))

    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    gpu = options(("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert gpu["num_gpus"] == 1 / ACTORS_PER_GPU and gpu["num_cpus"] == 1
    assert "num_gpus" not in options(("CPUExecutionProvider",))


def test_an_address_where_no_cluster_answers_is_a_one_line_error(tmp_path, corpus):
    pytest.importorskip("ray")
    from support.ray_cluster import free_port

    root, _rows = corpus
    table = tmp_path / "features.jsonl"
    table.write_text(json.dumps({"src": "clip0.mp4"}) + "\n")

    result = run_cli(
        "materialize", "--input", str(table), "--output", str(tmp_path / "out.jsonl"),
        "--root", str(root), "--ray-address", f"127.0.0.1:{free_port()}",
    )  # fmt: skip

    assert result.returncode == 1
    assert "no Ray cluster answers at 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_actors_that_cannot_load_the_model_stop_the_run_with_the_cause(ray_cluster, corpus):
    from dataclasses import replace

    root, rows = corpus
    config = MaterializeConfig(root=root, ray_address=ray_cluster.address)
    model = replace(prepare_model(config), sha256="0" * 64)  # not the file's: every actor refuses
    tasks = [(row["src"], _source(root, row)) for row in rows[:2]]

    with pytest.raises(ConnectionError, match="does not match its sha256"):
        list(RayRunner(config, model)(tasks))


def test_a_decode_stuck_past_the_limit_stops_its_actor_and_the_run_goes_on(
    ray_cluster, corpus, tmp_path, monkeypatch
):
    from saliency_assets.core.run import ray_runner

    root, rows = corpus
    stuck = tmp_path / "stuck.mp4"
    os.mkfifo(stuck)  # opening it blocks inside FFmpeg: no deadline check can interrupt that
    monkeypatch.setattr(ray_runner, "HARD_LIMIT_GRACE_S", 2.0)
    config = MaterializeConfig(root=root, decode_timeout=3.0, ray_address=ray_cluster.address)
    tasks = [("stuck", ClipSource(stuck)), *[(r["src"], _source(root, r)) for r in rows[:3]]]

    results = dict(RayRunner(config, prepare_model(config))(tasks))

    assert results["stuck"].status == DECODE_FAILED
    assert "did not finish within 3 s (decode_timeout)" in results["stuck"].detail
    assert is_transient(results["stuck"])
    assert [results[r["src"]].status for r in rows[:3]] == [OK] * 3
