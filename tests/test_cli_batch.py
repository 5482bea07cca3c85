"""``saliency-assets batch`` black-box: the reference batch tool's cases and the bugs we fix."""

import json

import pytest
from conftest import run_cli, run_cli_in_process


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_manifest(path, document):
    path.write_text(json.dumps(document))
    return path


def batch(manifest, *flags, run=run_cli_in_process):
    """The command on ``manifest``; in this process unless ``run=run_cli`` asks for a new one."""
    return run("batch", "--manifest", str(manifest), *flags)


def test_materializes_multiple_skipped_tables(tmp_path):
    write_jsonl(
        tmp_path / "input-a.jsonl",
        [{"src": "missing-a.mp4", "saliency_mean": 0.2, "saliency_var": 0.01}],
    )
    write_jsonl(
        tmp_path / "input-b.jsonl",
        [{"src": "missing-b.mp4", "saliency_mean": 0.4, "saliency_var": 0.02}],
    )
    manifest = write_manifest(
        tmp_path / "batch.json",
        {
            "defaults": {"max_frames": 2},
            "tables": [
                {
                    "id": "first",
                    "input": "input-a.jsonl",
                    "output": "out/a.jsonl",
                    "audit_json": "audit/a.json",
                },
                {
                    "id": "second",
                    "input": "input-b.jsonl",
                    "output": "out/b.jsonl",
                    "audit_json": "audit/b.json",
                },
            ],
        },
    )
    report_json, report_md = tmp_path / "report.json", tmp_path / "report.md"
    done = batch(
        manifest, "--report-json", str(report_json), "--report-md", str(report_md), run=run_cli
    )
    assert done.returncode == 0, done.stderr
    assert read_jsonl(tmp_path / "out/a.jsonl")[0]["saliency_status"] == "skipped-existing"
    assert read_jsonl(tmp_path / "out/b.jsonl")[0]["saliency_status"] == "skipped-existing"
    audit = json.loads((tmp_path / "audit/a.json").read_text())
    assert audit["schema"] == "saliency-materializer-audit-v1"
    assert audit["table_id"] == "first"
    assert audit["batch_manifest"] == str(manifest)
    assert len(audit["model"]["sha256"]) == 64
    report = json.loads(report_json.read_text())
    assert report["schema"] == "saliency-materializer-batch-v1"
    assert report["status"] == "ok"
    assert report["summary"]["tables"] == 2
    assert report["summary"]["skipped_existing"] == 2
    assert report["run_provenance"]["entrypoint"]["path"] == "saliency_assets/cli.py"
    assert "| first | ok | 1 | 0 | 1 | 0 |" in report_md.read_text()
    assert "saliency batch materialize: tables=2 total=2 ok=0 skipped=2 failed=0" in done.stderr


def test_markdown_report_layout(tmp_path):
    write_jsonl(
        tmp_path / "in.jsonl", [{"src": "m.mp4", "saliency_mean": 0.2, "saliency_var": 0.01}]
    )
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "t", "input": "in.jsonl", "output": "out.jsonl"}]},
    )
    report_md = tmp_path / "report.md"
    assert batch(manifest, "--report-md", str(report_md)).returncode == 0
    assert report_md.read_text() == (
        "# Saliency Materializer Batch Report\n\nStatus: **ok**\n\n"
        "| Table | Status | Total | OK | Skipped | Failed | Output |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | --- |\n"
        f"| t | ok | 1 | 0 | 1 | 0 | `{tmp_path / 'out.jsonl'}` |\n"
    )


def test_reports_row_failures(tmp_path):
    write_jsonl(tmp_path / "input.jsonl", [{"src": "missing.mp4"}])
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "broken", "input": "input.jsonl", "output": "out.jsonl"}]},
    )
    report_json = tmp_path / "report.json"
    assert batch(manifest, "--report-json", str(report_json)).returncode == 1
    report = json.loads(report_json.read_text())
    assert report["status"] == "failed"
    assert report["summary"]["failed"] == 1
    assert report["tables"][0]["status"] == "row-failures"
    assert read_jsonl(tmp_path / "out.jsonl")[0]["saliency_status"] == "missing-source"


def test_can_allow_row_failures(tmp_path):
    write_jsonl(tmp_path / "input.jsonl", [{"src": "missing.mp4"}])
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "broken", "input": "input.jsonl", "output": "out.jsonl"}]},
    )
    report_json = tmp_path / "report.json"
    assert (
        batch(manifest, "--report-json", str(report_json), "--allow-row-failures").returncode == 0
    )
    assert json.loads(report_json.read_text())["status"] == "row-failures"


def test_rejects_unknown_keys(tmp_path):
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "bad", "input": "in.jsonl", "output": "out.jsonl", "x": 1}]},
    )
    done = batch(manifest, run=run_cli)
    assert done.returncode == 2
    assert "saliency batch manifest error: unknown keys in table entry 0: ['x']" in done.stderr


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_frames": "8"}, "max_frames must be an integer"),
        ({"max_frames": -1}, "max_frames must be at least 1"),
        ({"ema_alpha": 2}, "ema_alpha"),
        ({"temporal_aggregator": "avg"}, "temporal_aggregator 'avg'"),
        ({"model_path": "missing.onnx"}, "missing.onnx"),
        ({"inference_size": "big"}, "inference_size"),
    ],
)
def test_bad_values_exit_2_naming_the_key(tmp_path, table, message):
    write_jsonl(tmp_path / "in.jsonl", [{"src": "a.mp4"}])
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "t", "input": "in.jsonl", "output": "out.jsonl", **table}]},
    )
    done = batch(manifest)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_duplicate_ids_and_shared_outputs_are_rejected(tmp_path):
    tables = [
        {"id": "a", "input": "in.jsonl", "output": "out.jsonl"},
        {"id": "a", "input": "in.jsonl", "output": "b.jsonl"},
    ]
    assert (
        "duplicate table id 'a'"
        in batch(write_manifest(tmp_path / "m1.json", {"tables": tables})).stderr
    )
    tables[1]["id"] = "b"
    tables[1]["output"] = "./out.jsonl"
    done = batch(write_manifest(tmp_path / "m2.json", {"tables": tables}))
    assert done.returncode == 2 and "write the same output" in done.stderr


def test_empty_tables_is_a_no_op(tmp_path):
    manifest = write_manifest(tmp_path / "batch.json", {"_status": "BLOCKED", "tables": []})
    report_json = tmp_path / "report.json"
    done = batch(manifest, "--report-json", str(report_json))
    assert done.returncode == 0
    assert "has no tables" in done.stderr
    report = json.loads(report_json.read_text())
    assert report["status"] == "ok" and report["summary"]["tables"] == 0


def test_errored_table_is_never_hidden(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{"src": "missing.mp4"}])
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    manifest = write_manifest(
        tmp_path / "batch.json",
        {
            "tables": [
                {"id": "bad", "input": "bad.jsonl", "output": "bad.out.jsonl"},
                {"id": "rows", "input": "rows.jsonl", "output": "rows.out.jsonl"},
            ]
        },
    )
    report_json = tmp_path / "report.json"
    done = batch(manifest, "--report-json", str(report_json), "--allow-row-failures")
    assert done.returncode == 1
    report = json.loads(report_json.read_text())
    assert report["status"] == "failed"
    assert report["tables"][0]["status"] == "error" and "line 1" in report["tables"][0]["error"]
    assert "summary" not in report["tables"][0]
    assert report["tables"][1]["status"] == "row-failures"


def test_fail_fast_stops_after_first_failing_table(tmp_path):
    write_jsonl(tmp_path / "rows.jsonl", [{"src": "missing.mp4"}])
    manifest = write_manifest(
        tmp_path / "batch.json",
        {
            "tables": [
                {"id": "one", "input": "rows.jsonl", "output": "one.jsonl"},
                {"id": "two", "input": "rows.jsonl", "output": "two.jsonl"},
            ]
        },
    )
    report_json = tmp_path / "report.json"
    assert batch(manifest, "--report-json", str(report_json), "--fail-fast").returncode == 1
    assert [t["id"] for t in json.loads(report_json.read_text())["tables"]] == ["one"]
    assert not (tmp_path / "two.jsonl").exists()


def test_base_dir_resolves_relative_paths(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "in.jsonl", [{"src": "m.mp4", "saliency_mean": 0.2, "saliency_var": 0.01}])
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "t", "input": "in.jsonl", "output": "out.jsonl"}]},
    )
    assert batch(manifest, "--base-dir", str(data)).returncode == 0
    assert (data / "out.jsonl").exists()


def test_provenance_describes_outputs_after_writing(tmp_path):
    write_jsonl(
        tmp_path / "in.jsonl", [{"src": "m.mp4", "saliency_mean": 0.2, "saliency_var": 0.01}]
    )
    manifest = write_manifest(
        tmp_path / "batch.json",
        {"tables": [{"id": "t", "input": "in.jsonl", "output": "out.jsonl"}]},
    )
    report_json, report_md = tmp_path / "report.json", tmp_path / "report.md"
    batch(manifest, "--report-json", str(report_json), "--report-md", str(report_md))
    described = json.loads(report_json.read_text())["run_provenance"]["outputs"]["report_md"]
    assert described["exists"] is True
    import hashlib

    assert described["sha256"] == hashlib.sha256(report_md.read_bytes()).hexdigest()


def test_batch_computes_real_clips_with_per_table_overrides(tmp_path, clip_dir):
    write_jsonl(tmp_path / "in.jsonl", [{"src": "clip.mp4"}, {"src": "raw_64x48.yuv"}])
    manifest = write_manifest(
        tmp_path / "batch.json",
        {
            "defaults": {"root": str(clip_dir), "max_frames": 2, "jobs": 2},
            "tables": [
                {"id": "native", "input": "in.jsonl", "output": "native.jsonl"},
                {
                    "id": "sized",
                    "input": "in.jsonl",
                    "output": "sized.parquet",
                    "inference_size": 32,
                    "sampling": "spread",
                    "temporal_aggregator": "motion-weighted",
                },
            ],
        },
    )
    done = batch(manifest, run=run_cli)
    assert done.returncode == 0, done.stderr
    assert [row["saliency_status"] for row in read_jsonl(tmp_path / "native.jsonl")] == ["ok", "ok"]
