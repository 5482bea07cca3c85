"""Inference engines: OpenVINO beside onnxruntime, chosen automatically, exact in compatible mode.

OpenVINO must give the statistics onnxruntime gives within 1e-6 (the reference comparison with
real clips runs for both engines in test_compatibility.py); here: larger frames, tiled frames,
the bundled model, what it is compiled with (FP32, never bf16; streams and threads as asked;
no pinning), which engine ``auto`` picks and says it picked, and how the worker pool splits
the cores (processes, and the tail of a run).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli_in_process
from support.clips import make_clip, pattern_planes

from saliency_assets.core.decode.clips import SamplingPlan
from saliency_assets.core.decode.decoding import DecodedFrame
from saliency_assets.core.model import saliency_model as model_module
from saliency_assets.core.model.clip_saliency import ClipJob, frame_saliency
from saliency_assets.core.model.openvino_runtime import openvino
from saliency_assets.core.model.reducers import map_statistics
from saliency_assets.core.model.saliency_model import (
    AUTO,
    CPU_PROVIDER,
    OPENVINO,
    SaliencyModel,
    engine_notice,
    validate_model_file,
)
from saliency_assets.core.run.workers import ClipWorkerPool, core_shares, worker_count
from saliency_assets.models import DEFAULT_MODEL_PATH

TOLERANCE = 1e-6
AUTO_LINE = "inference on OpenVINO"


@pytest.fixture(params=["saliency_student_v1", "saliency_student_v2", "bundled"])
def model_path(request, shared_models_dir):
    if request.param == "bundled":
        return DEFAULT_MODEL_PATH
    return shared_models_dir / f"{request.param}.onnx"


def frame(width: int, height: int, seed: int = 4) -> DecodedFrame:
    luma, u_plane, v_plane = pattern_planes(width, height, seed)
    return DecodedFrame(index=seed, luma=luma, chroma=(u_plane, v_plane))


def assert_same_statistics(ours: np.ndarray, reference: np.ndarray) -> None:
    for value, expected in zip(map_statistics(ours), map_statistics(reference), strict=True):
        assert value == pytest.approx(expected, abs=TOLERANCE)


def test_openvino_matches_onnxruntime_on_a_540p_frame(model_path):
    decoded = frame(960, 540)
    reference = frame_saliency(decoded, SaliencyModel(model_path, (CPU_PROVIDER,)))
    ours = frame_saliency(decoded, SaliencyModel(model_path, (OPENVINO,)))
    assert_same_statistics(ours, reference)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_openvino_tiled_matches_onnxruntime_single_call(shared_models_dir):
    path = shared_models_dir / "saliency_student_v1.onnx"
    decoded = frame(320, 200)
    reference = frame_saliency(decoded, SaliencyModel(path, (CPU_PROVIDER,)))
    tiled = SaliencyModel(path, (OPENVINO,), tile_size=64, tile_above_pixels=0)
    assert tiled.tiles_for(224, 320)  # several windows of varying shapes
    assert_same_statistics(frame_saliency(decoded, tiled), reference)


@pytest.mark.parametrize("streams", [1, 2])
def test_openvino_is_compiled_fp32_single_thread_streams_unpinned(shared_models_dir, streams):
    path = shared_models_dir / "saliency_student_v1.onnx"
    model = SaliencyModel(path, (OPENVINO,), streams=streams)
    compiled = model._runner.compiled
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32
    assert str(compiled.get_property("EXECUTION_MODE_HINT")) == "ExecutionMode.ACCURACY"
    assert compiled.get_property("NUM_STREAMS") == streams
    assert compiled.get_property("INFERENCE_NUM_THREADS") == streams  # one thread a stream
    # Pinned, two single-thread workers' threads land on one core (half speed each).
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_openvino_runs_large_calls_on_a_compile_for_their_shape_with_the_same_map(
    shared_models_dir, monkeypatch
):
    model = SaliencyModel(shared_models_dir / "saliency_student_v1.onnx", (OPENVINO,), streams=2)
    any_shape = frame_saliency(frame(160, 96), model)
    assert model._runner._exact_shape is None  # 160x96 is below the threshold
    monkeypatch.setattr(model_module, "STATIC_FROM_PIXELS", 10_000)
    exact_shape = frame_saliency(frame(160, 96), model)
    assert model._runner._exact_shape.shape == (1, 3, 96, 160)
    np.testing.assert_array_equal(exact_shape, any_shape)
    frame_saliency(frame(192, 128), model)
    assert model._runner._exact_shape.shape == (1, 3, 128, 192)  # only the latest shape's kept


def test_openvino_is_imported_without_its_usage_telemetry():
    """openvino's package posts usage data to Google Analytics from a forked process unless
    told otherwise; the runtime the workers import takes its converter's stub instead."""
    probe = (
        "from saliency_assets.core.model.openvino_runtime import openvino\n"
        "import sys\n"
        "print(sys.modules['openvino.tools.ovc.telemetry_utils'].tm.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "openvino.tools.ovc.telemetry_stub"


def test_auto_takes_openvino_and_cpu_provider_keeps_onnxruntime(shared_models_dir):
    path = shared_models_dir / "saliency_student_v1.onnx"
    assert SaliencyModel(path, (AUTO,)).providers == (OPENVINO,)
    assert SaliencyModel(path, ("OpenVINOExecutionProvider",)).providers == (OPENVINO,)
    assert SaliencyModel(path, (CPU_PROVIDER,)).providers == (CPU_PROVIDER,)


def test_auto_without_openvino_is_onnxruntime_and_says_so(monkeypatch):
    monkeypatch.setattr(model_module, "openvino_installed", lambda: False)
    assert SaliencyModel(DEFAULT_MODEL_PATH, (AUTO,)).providers == (CPU_PROVIDER,)
    backend = validate_model_file(DEFAULT_MODEL_PATH, (AUTO,))
    assert "inference on onnxruntime" in engine_notice((AUTO,), backend)
    assert engine_notice((CPU_PROVIDER,), backend) is None


def test_openvino_asked_for_but_missing_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(model_module, "openvino_installed", lambda: False)
    with caplog.at_level(logging.WARNING, logger="saliency_assets.core.model.saliency_model"):
        model = SaliencyModel(DEFAULT_MODEL_PATH, (OPENVINO, CPU_PROVIDER))
    assert model.providers == (CPU_PROVIDER,)
    assert "OpenVINO is not installed" in caplog.text


def test_a_bad_file_is_a_config_error_on_openvino(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(model_module.ConfigError, match="not a loadable ONNX model"):
        SaliencyModel(bad, (OPENVINO,))


@pytest.mark.parametrize(
    ("cores", "workers", "shares"),
    [(2, 2, [1, 1]), (2, 1, [2]), (3, 2, [2, 1]), (4, 3, [2, 1, 1]), (2, 3, [1, 1, 1])],
)
def test_core_shares_split_every_core(cores, workers, shares):
    assert core_shares(cores, workers) == shares


@pytest.mark.parametrize(
    ("inference_size", "cores", "workers"), [(None, 2, 1), (None, 3, 2), (None, 1, 1), (288, 2, 2)]
)
def test_native_frames_take_a_worker_per_two_cores_sized_frames_one_per_core(
    inference_size, cores, workers
):
    job = ClipJob(SamplingPlan(inference_size=inference_size), "mean", 0.6, Path("m"), (AUTO,))
    assert worker_count(job, cores) == workers


def test_pool_gives_the_idle_core_to_the_last_busy_worker():
    pool = ClipWorkerPool(job=None, jobs=2, cores=2)
    busy, idle = (SimpleNamespace(task=task, share=SimpleNamespace(value=1)) for task in "x_")
    idle.task = None
    pool._workers = [busy, idle]
    pool._share_cores(tail=False)  # clips still waiting: one core each
    assert (busy.share.value, idle.share.value) == (1, 1)
    pool._share_cores(tail=True)  # none waiting: the busy one takes both cores
    assert busy.share.value == 2


@pytest.mark.parametrize("inference_size", ["native", "48"])
def test_three_clips_on_two_cores_equal_one_core_exactly_and_say_the_engine(
    tmp_path, inference_size
):
    """Native: one worker spreads each clip's frames over two streams; sized: two workers, the
    last clip's frames spread over both cores. Clips of 5-7 frames under the 8-frame head
    window also restart their fold. Either way the values are the one-core run's, bit for bit."""
    table = tmp_path / "in.jsonl"
    rows = [{"src": str(make_clip(tmp_path / f"c{n}.mp4", 96, 64, 5 + n))} for n in range(3)]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    outputs = {}
    for jobs in ("1", "2"):
        output = tmp_path / f"out{jobs}.jsonl"
        done = run_cli_in_process(
            "materialize", "--input", str(table), "--output", str(output), "--jobs", jobs,
            "--inference-size", inference_size, "--results-store", "none",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert AUTO_LINE in done.stderr
        outputs[jobs] = [json.loads(line) for line in output.read_text().splitlines()]
    for one, two in zip(outputs["1"], outputs["2"], strict=True):
        assert two["saliency_status"] == "ok"
        assert (two["saliency_mean"], two["saliency_var"]) == (
            one["saliency_mean"],
            one["saliency_var"],
        )


def test_naming_the_cpu_provider_keeps_onnxruntime_and_its_values(tmp_path, clip_dir):
    table = tmp_path / "in.jsonl"
    table.write_text(json.dumps({"src": str(clip_dir / "clip.mp4")}) + "\n")
    rows, errors = {}, {}
    for name, extra in (("auto", ()), ("cpu", ("--providers", CPU_PROVIDER))):
        output = tmp_path / f"{name}.jsonl"
        done = run_cli_in_process(
            "materialize", "--input", str(table), "--output", str(output), "--jobs", "1",
            "--results-store", "none", *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows[name], errors[name] = json.loads(output.read_text()), done.stderr
    assert AUTO_LINE not in errors["cpu"]
    assert rows["auto"]["saliency_mean"] == pytest.approx(rows["cpu"]["saliency_mean"], abs=1e-6)


def test_auto_runs_on_onnxruntime_where_openvino_cannot_compile_the_model(monkeypatch, caplog):
    def refuse(path, threads, streams):
        raise model_module.ConfigError(f"model file {path} is not a loadable ONNX model: no")

    monkeypatch.setattr(model_module, "_OpenVinoRunner", refuse)
    with caplog.at_level(logging.WARNING, logger="saliency_assets.core.model.saliency_model"):
        assert SaliencyModel(DEFAULT_MODEL_PATH, (AUTO,)).providers == (CPU_PROVIDER,)
    assert "OpenVINO cannot run this model" in caplog.text
    with pytest.raises(model_module.ConfigError):  # asked for by name: no quiet substitute
        SaliencyModel(DEFAULT_MODEL_PATH, (OPENVINO,))
