"""``saliency-assets materialize`` black-box: the reference tool's test cases and behaviours,
through the real command, with real clips, real decoding and the real bundled model."""

import json

import onnxruntime
import pyarrow.parquet as pq
import pytest
from conftest import run_cli, run_cli_in_process


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def materialize(
    tmp_path, rows, *flags, output_name="out.jsonl", input_name="in.jsonl", run=run_cli_in_process
):
    """The command on ``rows``; in this process unless ``run=run_cli`` asks for a new one."""
    source = tmp_path / input_name
    if input_name.endswith(".jsonl"):
        write_jsonl(source, rows)
    output = tmp_path / output_name
    done = run(
        "materialize", "--input", str(source), "--output", str(output), "--jobs", "2", *flags
    )
    return done, output


def test_jsonl_roundtrip_through_the_command(tmp_path, clip_dir):
    rows = [{"src": "clip.mp4", "width": 4}, {"src": "other.mp4", "width": 8}]
    done, output = materialize(tmp_path, rows, "--root", str(clip_dir), run=run_cli)
    assert done.returncode == 0, done.stderr
    written = read_jsonl(output)
    assert [(row["src"], row["width"]) for row in written] == [("clip.mp4", 4), ("other.mp4", 8)]


def test_decodes_and_writes_aggregates_with_metadata(tmp_path, clip_dir):
    rows = [{"src": str(clip_dir / "clip.mp4"), "width": 4, "height": 4}]
    done, output = materialize(
        tmp_path,
        rows,
        "--max-frames",
        "1",
        "--frame-samples",
        "3",
        "--model-id",
        "centre_surround_saliency_v1",
        "--temporal-aggregator",
        "max",
        "--ema-alpha",
        "0.75",
    )
    assert done.returncode == 0, done.stderr
    row = read_jsonl(output)[0]
    assert row["saliency_status"] == "ok"
    assert 0.0 < row["saliency_mean"] < 1.0
    assert row["saliency_var"] > 0.0
    assert row["saliency_model_id"] == "centre_surround_saliency_v1"
    assert row["saliency_aggregator"] == "max"
    assert row["saliency_ema_alpha"] == pytest.approx(0.75)
    assert "saliency materialize: total=1 ok=1 skipped=0 failed=0" in done.stderr


def test_row_without_geometry_is_probed_from_the_stream(tmp_path, clip_dir):
    done, output = materialize(tmp_path, [{"src": str(clip_dir / "clip.mp4")}], "--max-frames", "1")
    assert done.returncode == 0, done.stderr
    row = read_jsonl(output)[0]
    assert row["saliency_status"] == "ok"
    assert row["saliency_model_id"] == "centre_surround_saliency_v1"


def test_wrong_row_geometry_does_not_change_container_results(tmp_path, clip_dir):
    rows = [{"src": "clip.mp4"}, {"src": "clip.mp4", "width": 640, "height": 480}]
    done, output = materialize(tmp_path, rows, "--root", str(clip_dir), "--max-frames", "2")
    assert done.returncode == 0, done.stderr
    first, second = read_jsonl(output)
    assert first["saliency_mean"] == second["saliency_mean"]


def test_skips_existing_saliency(tmp_path):
    rows = [{"src": "missing.mp4", "saliency_mean": 0.2, "saliency_var": 0.01}]
    done, output = materialize(tmp_path, rows)
    assert done.returncode == 0, done.stderr
    row = read_jsonl(output)[0]
    assert (row["saliency_mean"], row["saliency_var"]) == (0.2, 0.01)
    assert row["saliency_status"] == "skipped-existing"
    assert "saliency_model_id" not in row


def test_marks_missing_source_and_exits_1(tmp_path):
    done, output = materialize(tmp_path, [{"src": "missing.mp4"}], "--root", str(tmp_path))
    assert done.returncode == 1
    row = read_jsonl(output)[0]
    assert row["saliency_status"] == "missing-source"
    assert "all 1 failures have status 'missing-source'" in done.stderr


def test_audit_json_with_run_provenance(tmp_path, clip_dir):
    rows = [{"src": str(clip_dir / "clip.mp4"), "saliency_mean": 0.25, "saliency_var": 0.01}]
    audit = tmp_path / "audit.json"
    done, output = materialize(tmp_path, rows, "--audit-json", str(audit), run=run_cli)
    assert done.returncode == 0, done.stderr
    record = json.loads(audit.read_text())
    assert record["summary"]["skipped_existing"] == 1
    provenance = record["run_provenance"]
    assert provenance["schema"] == "ai-run-provenance-v1"
    assert provenance["entrypoint"]["path"] == "saliency_assets/cli.py"
    assert provenance["inputs"]["input"]["kind"] == "file"
    assert provenance["outputs"]["output"]["path"] == str(output)
    assert provenance["outputs"]["output"]["sha256"]
    assert len(provenance["model"]["sha256"]) == 64
    assert provenance["inputs"]["model_path"]["sha256"] == provenance["model"]["sha256"]
    assert {"onnxruntime", "av", "numpy", "saliency-assets"} <= set(provenance["versions"])
    assert provenance["versions"]["onnxruntime"] == onnxruntime.__version__  # read, not imported
    assert provenance["started_at"] <= provenance["finished_at"]


def test_audit_records_temporal_config(tmp_path, shared_models_dir):
    audit = tmp_path / "audit.json"
    done, _ = materialize(
        tmp_path,
        [{"src": "missing.mp4"}],
        "--audit-json",
        str(audit),
        "--model-id",
        "saliency_student_v2",
        "--temporal-aggregator",
        "ema",
        "--ema-alpha",
        "0.4",
        "--model-path",
        str(shared_models_dir / "saliency_student_v2.onnx"),
    )
    assert done.returncode == 1
    record = json.loads(audit.read_text())
    assert record["config"]["model_id"] == "saliency_student_v2"
    assert record["config"]["temporal_aggregator"] == "ema"
    assert record["config"]["ema_alpha"] == pytest.approx(0.4)
    assert record["model"]["sha256"] == (
        "8cdaa6c10ab44d9b03a6a207603bd0b61f5c75a6beafdc82da57215f0a2ab2ed"
    )


def test_default_geometry_used_for_raw_rows_without_geometry(tmp_path, clip_dir):
    done, output = materialize(
        tmp_path,
        [{"src": str(clip_dir / "raw_64x48.yuv")}],
        "--default-width",
        "64",
        "--default-height",
        "48",
        "--max-frames",
        "1",
        "--frame-samples",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert read_jsonl(output)[0]["saliency_status"] == "ok"


def test_raw_yuv_without_any_geometry_is_missing_geometry(tmp_path, clip_dir):
    raw = tmp_path / "noname.yuv"
    raw.write_bytes((clip_dir / "raw_64x48.yuv").read_bytes())
    done, output = materialize(tmp_path, [{"src": str(raw)}])
    assert done.returncode == 1
    assert read_jsonl(output)[0]["saliency_status"] == "missing-geometry"


def test_caches_per_file_and_replays_failures(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a real mp4")
    rows = [{"src": str(broken), "width": 4, "height": 4}] * 3
    done, output = materialize(tmp_path, rows)
    assert done.returncode == 1
    written = read_jsonl(output)
    assert [row["saliency_status"] for row in written] == ["decode-failed"] * 3
    assert all("broken.mp4" in row["saliency_error"] for row in written)


def test_jsonl_in_parquet_out(tmp_path, clip_dir):
    rows = [{"src": "clip.mp4", "frame": 0}, {"src": "clip.mp4", "frame": 1}]
    done, output = materialize(
        tmp_path, rows, "--root", str(clip_dir), "--max-frames", "2", output_name="out.parquet"
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(output).to_pylist()
    assert [row["frame"] for row in table] == [0, 1]
    assert table[0]["saliency_mean"] == table[1]["saliency_mean"]


def test_bad_extension_is_a_usage_error(tmp_path):
    done, output = materialize(tmp_path, [{"src": "a.mp4"}], output_name="out.csv", run=run_cli)
    assert done.returncode == 2
    assert "out.csv" in done.stderr and "Traceback" not in done.stderr
    assert not output.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temporal-aggregator", "median"], "invalid choice"),
        (["--ema-alpha", "1.5"], "ema_alpha"),
        (["--max-frames", "0"], "max_frames"),
        (["--model-path", "nope.onnx"], "nope.onnx"),
        (["--model-id", "unknown_model"], "unknown_model"),
        (["--ffmpeg-bin", "/no/such/ffmpeg"], "/no/such/ffmpeg"),
    ],
)
def test_configuration_errors_exit_2_before_work(tmp_path, flags, message):
    done, output = materialize(tmp_path, [{"src": "a.mp4"}], *flags)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not output.exists()


def test_invalid_onnx_file_is_a_configuration_error(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not onnx")
    done, _ = materialize(tmp_path, [{"src": "a.mp4"}], "--model-path", str(bogus))
    assert done.returncode == 2
    assert "not a loadable ONNX model" in done.stderr


def test_malformed_input_names_the_line_and_writes_nothing(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"src": "a.mp4"}\n{oops\n')
    output = tmp_path / "out.jsonl"
    done = run_cli("materialize", "--input", str(source), "--output", str(output))
    assert done.returncode == 1
    assert "line 2" in done.stderr and "Traceback" not in done.stderr
    assert not output.exists()


def test_540p_clip_is_ok(tmp_path, clip_dir):
    done, output = materialize(tmp_path, [{"src": str(clip_dir / "wide_540.mp4")}])
    assert done.returncode == 0, done.stderr
    assert read_jsonl(output)[0]["saliency_status"] == "ok"


def test_inference_size_and_spread_are_recorded_per_row(tmp_path, clip_dir):
    done, output = materialize(
        tmp_path,
        [{"src": str(clip_dir / "other.mp4")}],
        "--inference-size",
        "32",
        "--sampling",
        "spread",
    )
    assert done.returncode == 0, done.stderr
    row = read_jsonl(output)[0]
    assert (row["saliency_sampling"], row["saliency_inference_size"]) == ("spread", "32")


def test_named_ffmpeg_binary_gives_the_same_values(tmp_path, clip_dir):
    from support.clips import ffmpeg_exe

    rows = [{"src": str(clip_dir / "clip.mp4")}]
    _, in_process = materialize(tmp_path, rows, "--max-frames", "3")
    done, piped = materialize(
        tmp_path, rows, "--max-frames", "3", "--ffmpeg-bin", ffmpeg_exe(), output_name="piped.jsonl"
    )
    assert done.returncode == 0, done.stderr
    assert read_jsonl(piped)[0]["saliency_mean"] == pytest.approx(
        read_jsonl(in_process)[0]["saliency_mean"], abs=1e-7
    )
