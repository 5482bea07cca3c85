"""Tables, audits and clips on a real S3-compatible server (SeaweedFS) started on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import blake3
import pytest
from conftest import run_cli
from support.clips import make_clip, make_raw_yuv
from support.postgres import query
from support.s3_server import put

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.statuses import MISSING_SOURCE, OK
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip
from saliency_assets.core.model.saliency_model import SaliencyModel
from saliency_assets.core.run.engine import prepare_model
from saliency_assets.core.run.fingerprints import FingerprintMemo
from saliency_assets.core.run.pg_store import RESULTS_TABLE
from saliency_assets.core.run.results_store import source_fingerprint
from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.sources import Unresolved, locate_source
from saliency_assets.core.tables.table_files import Table, TableError, read_table, write_table

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory):
    """Four clips (three containers and a raw .yuv) and a per-frame table naming them."""
    folder = tmp_path_factory.mktemp("s3-corpus")
    clips = folder / "clips"
    clips.mkdir()
    for index, name in enumerate(("a.mp4", "b.mkv", "c.mp4")):
        make_clip(clips / name, 64 + 16 * index, 48, 6)
    make_raw_yuv(clips / "raw_64x48.yuv", 64, 48, 6)
    names = sorted(path.name for path in clips.iterdir())
    rows = [{"src": name, "frame": frame} for name in names for frame in range(2)]
    rows.append({"src": "not-there.mp4", "frame": 0})
    table = folder / "features.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def upload_corpus(folder, bucket: str) -> str:
    for clip in (folder / "clips").iterdir():
        put(f"s3://{bucket}/clips/{clip.name}", clip.read_bytes())
    put(f"s3://{bucket}/features.jsonl", (folder / "features.jsonl").read_bytes())
    return f"s3://{bucket}"


def run_materialize(table: str, output: str, root: str, *extra: str, store: str = "none"):
    return run_cli(
        "materialize", "--input", table, "--output", output, "--root", root,
        "--max-frames", "4", "--results-store", store, *extra,
    )  # fmt: skip


def assert_same_values(rows, expected_rows):
    assert len(rows) == len(expected_rows)
    for row, expected in zip(rows, expected_rows, strict=True):
        assert row["saliency_status"] == expected["saliency_status"], row
        if expected["saliency_status"] == OK:
            for column in ("saliency_mean", "saliency_var"):
                assert math.isclose(row[column], expected[column], abs_tol=TOLERANCE)


@pytest.fixture(scope="module")
def local_rows(local_corpus):
    """The table computed by local workers from the local copy, once for the module."""
    output = local_corpus / "local.jsonl"
    result = run_materialize(
        str(local_corpus / "features.jsonl"),
        str(output),
        str(local_corpus / "clips"),
        "--jobs",
        "1",
    )
    assert result.returncode == 1, result.stderr  # the missing clip's row
    return read_table(output).rows


def test_cli_reads_table_and_clips_from_s3_and_writes_outputs_there(
    s3_bucket, local_corpus, local_rows
):
    base = upload_corpus(local_corpus, s3_bucket)

    result = run_materialize(
        f"{base}/features.jsonl", f"{base}/out/features.saliency.parquet", f"{base}/clips",
        "--audit-json", f"{base}/out/audit.json", "--jobs", "1",
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    rows = read_table(f"{base}/out/features.saliency.parquet").rows
    assert_same_values(rows, local_rows)
    missing = [row for row in rows if row["src"] == "not-there.mp4"]
    assert missing[0]["saliency_status"] == MISSING_SOURCE
    assert f"{base}/clips/not-there.mp4" in missing[0]["saliency_error"]
    with filesystems.open_input(f"{base}/out/audit.json") as handle:
        audit = json.load(handle)
    assert audit["summary"]["ok"] == len(rows) - 1
    described = audit["run_provenance"]["inputs"]["input"]
    assert described["path"] == f"{base}/features.jsonl"
    expected = hashlib.sha256((local_corpus / "features.jsonl").read_bytes()).hexdigest()
    assert (described["kind"], described["sha256"]) == ("file", expected)
    assert not (local_corpus / "s3:").exists()


def test_cli_on_ray_with_the_postgresql_store_reads_and_writes_s3_like_a_local_run(
    ray_cluster, s3_bucket, pg_url, local_corpus, local_rows
):
    """The production shape on one machine: clips computed on the cluster, results in the
    shared PostgreSQL store, table, clips and audit on the S3 server."""
    base = upload_corpus(local_corpus, s3_bucket)

    result = run_materialize(
        f"{base}/features.jsonl", f"{base}/out/features.saliency.jsonl", f"{base}/clips",
        "--ray-address", ray_cluster.address, "--audit-json", f"{base}/out/audit.json",
        store=pg_url,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr  # the missing clip's row
    rows = read_table(f"{base}/out/features.saliency.jsonl").rows
    assert_same_values(rows, local_rows)
    clips = {row["src"]: row["saliency_status"] for row in rows if row["src"] != "not-there.mp4"}
    assert set(clips.values()) == {OK}
    with filesystems.open_input(f"{base}/out/audit.json") as handle:
        assert json.load(handle)["unstored_clips"] == 0
    assert query(pg_url, f"SELECT count(*) FROM {RESULTS_TABLE}") == [(len(clips),)]


def test_a_clip_object_is_read_by_range_not_downloaded(s3_bucket, tmp_path, monkeypatch):
    long_clip, raw = tmp_path / "long.mkv", tmp_path / "long_640x360.yuv"
    make_clip(long_clip, 640, 360, 150, codec="ffv1")  # lossless: megabytes, quickly
    make_raw_yuv(raw, 640, 360, 24)
    put(f"s3://{s3_bucket}/long.mkv", long_clip.read_bytes())
    put(f"s3://{s3_bucket}/long_640x360.yuv", raw.read_bytes())
    fetched = count_bytes_fetched(monkeypatch)
    config = MaterializeConfig(max_frames=2)
    model = prepare_model(config)
    job, session = ClipJob.from_config(config, model.path), SaliencyModel(model.path)

    for source, size in (
        (ClipSource(f"s3://{s3_bucket}/long.mkv"), long_clip.stat().st_size),
        (ClipSource(f"s3://{s3_bucket}/long_640x360.yuv", 640, 360, "yuv420p"), raw.stat().st_size),
    ):
        fetched.clear()
        result = compute_clip(source, job, session)
        assert result.status == OK, result.detail
        assert sum(fetched) < size / 2, (sum(fetched), size)


def count_bytes_fetched(monkeypatch) -> list[int]:
    """Bytes each read of an object asked the server for."""
    fetched: list[int] = []
    original = filesystems._ArrowReader.readinto

    def counting(self, buffer):
        count = original(self, buffer)
        fetched.append(count)
        return count

    monkeypatch.setattr(filesystems._ArrowReader, "readinto", counting)
    return fetched


def test_a_failed_write_leaves_the_old_object_whole(s3_bucket):
    uri = f"s3://{s3_bucket}/out/table.jsonl"
    write_table(uri, Table([{"src": "a.mp4", "saliency_mean": 0.5}]))
    before = read_table(uri).rows
    unwritable = [{"src": f"{index}.mp4"} for index in range(1000)] + [{"src": object()}]

    with pytest.raises((TableError, TypeError)):
        write_table(uri, Table(unwritable))

    assert read_table(uri).rows == before
    assert filesystems.stat(f"s3://{s3_bucket}/out/other.jsonl").kind == "missing"


def test_a_missing_input_object_is_a_one_line_error(s3_bucket, tmp_path):
    result = run_materialize(
        f"s3://{s3_bucket}/no-such-table.jsonl", str(tmp_path / "out.jsonl"), str(tmp_path)
    )

    assert result.returncode == 1
    assert f"s3://{s3_bucket}/no-such-table.jsonl: input table does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_batch_manifest_with_s3_paths_writes_tables_and_reports_there(
    s3_bucket, local_corpus, tmp_path
):
    base = upload_corpus(local_corpus, s3_bucket)
    manifest = tmp_path / "manifest.json"
    table = {
        "id": "on-s3",
        "input": f"{base}/features.jsonl",
        "output": f"{base}/batch/features.saliency.jsonl",
        "audit_json": f"{base}/batch/audit.json",
    }
    defaults = {"root": f"{base}/clips", "max_frames": 4, "results_store": "none"}
    manifest.write_text(json.dumps({"defaults": defaults, "tables": [table]}))

    result = run_cli(
        "batch", "--manifest", str(manifest), "--allow-row-failures",
        "--report-json", f"{base}/batch/report.json", "--report-md", f"{base}/batch/report.md",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    rows = read_table(f"{base}/batch/features.saliency.jsonl").rows
    assert [row["saliency_status"] for row in rows].count(OK) == len(rows) - 1
    with filesystems.open_input(f"{base}/batch/report.json") as handle:
        report = json.load(handle)
    assert report["tables"][0]["status"] == "row-failures"
    assert filesystems.stat(f"{base}/batch/report.md").kind == "file"
    assert not (tmp_path / "s3:").exists()


def test_confine_to_root_keeps_objects_under_an_s3_root_as_objects(s3_bucket):
    root = f"s3://{s3_bucket}/clips"
    put(f"{root}/x.mp4", b"only stat-ed here")
    config = MaterializeConfig(root=Path(root), confine_to_root=True)

    assert locate_source({"src": "x.mp4"}, config) == Path(f"{root}/x.mp4")
    outside = locate_source({"src": "../elsewhere/x.mp4"}, config)
    assert isinstance(outside, Unresolved)
    assert f"s3://{s3_bucket}/elsewhere/x.mp4 is outside root {root}" in outside.detail


def test_an_object_clip_has_the_fingerprint_of_the_same_bytes_on_disk(s3_bucket, local_corpus):
    """The results store's key: the whole content's BLAKE3, wherever the bytes are kept."""
    clip = local_corpus / "clips" / "a.mp4"
    put(f"s3://{s3_bucket}/a.mp4", clip.read_bytes())

    on_s3 = source_fingerprint(ClipSource(f"s3://{s3_bucket}/a.mp4"))

    assert on_s3 == source_fingerprint(ClipSource(clip))
    assert on_s3 == "blake3:" + blake3.blake3(clip.read_bytes()).hexdigest()


def test_a_rerun_reads_no_unchanged_object_and_rereads_a_rewritten_one(
    s3_bucket, local_corpus, tmp_path, monkeypatch
):
    """The host's fingerprint memo keeps an object's digest by its ETag: a rewrite of the same
    size within the same second (same last-modified) is read again all the same."""
    uri = f"s3://{s3_bucket}/memo/a.mp4"
    original = (local_corpus / "clips" / "a.mp4").read_bytes()
    rewritten = original[:-1] + bytes([original[-1] ^ 1])
    put(uri, original)
    fetched = count_bytes_fetched(monkeypatch)

    def fingerprint_in_a_new_run() -> str:
        memo = FingerprintMemo(tmp_path / "fingerprints.sqlite")
        try:
            return source_fingerprint(ClipSource(uri), memo)
        finally:
            memo.close()

    first = fingerprint_in_a_new_run()
    first_read = sum(fetched)
    fetched.clear()
    again = fingerprint_in_a_new_run()
    rerun_read = sum(fetched)
    put(uri, rewritten)
    fetched.clear()
    after_rewrite = fingerprint_in_a_new_run()

    assert first_read == len(original)
    assert (again, rerun_read) == (first, 0)
    assert after_rewrite == "blake3:" + blake3.blake3(rewritten).hexdigest() != first
    assert sum(fetched) == len(rewritten)
