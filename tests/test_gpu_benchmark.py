"""benchmarks/gpu.py: without CUDA it says so and measures nothing; its measuring path runs.

No timing is asserted: the script's figures are for a machine with a GPU (benchmarks/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from saliency_assets.models import DEFAULT_MODEL_PATH

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def run_script(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={"OUT": str(out), "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    written = sorted(out.glob("gpu-*.json"))
    return done, json.loads(written[-1].read_text()) if written else {}


def test_without_cuda_it_says_so_in_one_line_and_exits_cleanly(tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be observed")
    done, written = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "has no CUDAExecutionProvider" in done.stdout
    assert "nothing measured" in done.stdout
    assert "Traceback" not in done.stderr
    assert written["status"] == "no-cuda"


def test_the_measuring_path_runs_on_the_cpu_in_a_dry_run(tmp_path):
    done, written = run_script(
        tmp_path, "--dry-run-on-cpu", "--clips", "1", "--geometry", "160x96", "--jobs", "1",
        "--modes", "288", "--model", str(DEFAULT_MODEL_PATH), "--work", str(tmp_path / "w"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    measured = written["modes"]["288"]
    assert written["status"] == "measured" and written["clips"] == 1
    assert measured["gpu_s"] > 0 and measured["decode_floor_s"] > 0
    assert measured["max_abs_diff_gpu_cpu"] <= 1e-6  # CPU provider against auto: same values
