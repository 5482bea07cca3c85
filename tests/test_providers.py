"""Execution providers: a missing accelerator falls back to CPU, says so, changes nothing."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli
from support.clips import pattern_planes

from saliency_assets.core.decode.decoding import DecodedFrame
from saliency_assets.core.model.clip_saliency import frame_saliency
from saliency_assets.core.model.saliency_model import CPU_PROVIDER, SaliencyModel

CUDA_THEN_CPU = ("CUDAExecutionProvider", CPU_PROVIDER)
FALLBACK_LINE = (
    "execution providers CUDAExecutionProvider are not available; "
    "falling back to CPUExecutionProvider"
)


@pytest.fixture(autouse=True)
def cpu_only_onnxruntime():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA; the fallback cannot be observed")


@pytest.fixture
def student_v1(shared_models_dir):
    return shared_models_dir / "saliency_student_v1.onnx"


def test_asking_for_cuda_runs_on_cpu_and_logs_the_fallback(student_v1, caplog):
    with caplog.at_level(logging.WARNING, logger="saliency_assets.core.model.saliency_model"):
        model = SaliencyModel(student_v1, CUDA_THEN_CPU)

    assert model.providers == (CPU_PROVIDER,)
    assert FALLBACK_LINE in caplog.text


def test_the_cpu_fallback_gives_identical_numbers(student_v1):
    luma, u_plane, v_plane = pattern_planes(160, 96, 4)
    frame = DecodedFrame(index=4, luma=luma, chroma=(u_plane, v_plane))

    fallback = frame_saliency(frame, SaliencyModel(student_v1, CUDA_THEN_CPU))
    cpu = frame_saliency(frame, SaliencyModel(student_v1, (CPU_PROVIDER,)))

    np.testing.assert_array_equal(fallback, cpu)


def test_the_command_with_cuda_requested_writes_the_cpu_run_numbers(tmp_path, clip_dir):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"src": str(clip_dir / "clip.mp4")}) + "\n")
    outputs = {}
    for name, providers in (("cpu", CPU_PROVIDER), ("cuda", ",".join(CUDA_THEN_CPU))):
        output = tmp_path / f"{name}.jsonl"
        done = run_cli(
            "materialize", "--input", str(source), "--output", str(output), "--jobs", "1",
            "--results-store", "none", "--providers", providers,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs[name] = (json.loads(output.read_text()), done.stderr)

    cuda_row, cuda_stderr = outputs["cuda"]
    cpu_row, _ = outputs["cpu"]
    assert FALLBACK_LINE in cuda_stderr
    assert cuda_row["saliency_status"] == "ok"
    assert (cuda_row["saliency_mean"], cuda_row["saliency_var"]) == (
        cpu_row["saliency_mean"],
        cpu_row["saliency_var"],
    )


def test_a_bound_call_gives_the_map_of_a_plain_call_bit_for_bit(student_v1):
    """The I/O binding a CUDA session's calls use, exercised on onnxruntime's CPU device (the
    same binding calls; only the device differs), against ``session.run``."""
    model = SaliencyModel(student_v1, (CPU_PROVIDER,))
    tensor = np.random.default_rng(7).standard_normal((1, 3, 96, 160), dtype=np.float32)
    plain = model.run_window(tensor)
    assert model._runner.bound_device is None  # the CPU keeps session.run
    model._runner.bound_device = "cpu"
    bound = model.run_window(tensor)
    assert not model.on_accelerator
    np.testing.assert_array_equal(bound, plain)
    assert bound.shape == (96, 160) and bound.dtype == np.float32
    window = tensor[:, :, :64, :96]  # a strided view, as tile windows are
    np.testing.assert_array_equal(
        model.run_window(window), model._runner.session.run(None, {"input": window.copy()})[0][0, 0]
    )
