"""What every benchmark script shares: paths, the production model, timing a process tree."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SHARED_MODELS_ENV = "SALIENCY_ASSETS_SHARED_MODELS"
PYTHON = sys.executable
SAMPLE_EVERY_S = 0.02
PSS_EVERY_TICKS = 10


def shared_model(name: str = "saliency_student_v1") -> Path:
    """A production model from ``$SALIENCY_ASSETS_SHARED_MODELS`` or ``<repo>/../shared/models``."""
    configured = os.environ.get(SHARED_MODELS_ENV)
    folder = Path(configured) if configured else REPO_ROOT.parent / "shared" / "models"
    path = folder / f"{name}.onnx"
    if not path.is_file():
        raise SystemExit(f"model {path} not found: set {SHARED_MODELS_ENV} to its folder")
    return path


def ffmpeg_binary() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Measured:
    """One command's wall time and the peaks of its whole process tree's summed RSS and PSS."""

    seconds: float
    peak_rss_mb: float
    peak_pss_mb: float
    peak_root_rss_mb: float
    peak_descendants_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def table_row(clip: dict) -> dict:
    """A corpus clip as a row of the product's input table (raw ``.yuv`` with its geometry)."""
    if clip["codec"] == "yuv":
        return {"src": clip["path"], "width": clip["width"], "height": clip["height"]}
    return {"src": clip["path"]}


def run_measured(command: list[str], cwd: Path = REPO_ROOT, env: dict | None = None) -> Measured:
    """Run ``command``; sample the memory of it and all its descendants.

    RSS summed over the tree counts pages shared between processes (the libraries a forked
    worker shares with its parent) once per process, so it overstates the footprint; PSS
    splits each shared page between its sharers, so its sum is what the tree really holds.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = _TreeSampler(process.pid)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    sampler.stop()
    peaks = (sampler.peak_rss, sampler.peak_pss, sampler.peak_root, sampler.peak_descendants)
    return Measured(seconds, *(peak / 1e6 for peak in peaks), process.returncode, stdout, stderr)


class _TreeSampler(threading.Thread):
    """Samples RSS (cheap: ``statm``) every 20 ms and PSS (``smaps_rollup``) every 200 ms.

    The process list is refreshed with the PSS reading: walking ``/proc`` every 20 ms would
    cost the measured command a noticeable share of a core.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_rss = self.peak_pss = self.peak_root = self.peak_descendants = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        processes: list[psutil.Process] = []
        tick = 0
        while not self._stopping.is_set():
            if tick % PSS_EVERY_TICKS == 0:
                processes = _tree(self.root)
                self.peak_pss = max(self.peak_pss, _sum_memory(processes, "pss"))
            root_rss = _sum_memory(processes[:1], "rss")
            rss = root_rss + _sum_memory(processes[1:], "rss")
            self.peak_rss, self.peak_root = max(self.peak_rss, rss), max(self.peak_root, root_rss)
            self.peak_descendants = max(self.peak_descendants, rss - root_rss)
            tick += 1
            self._stopping.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _sum_memory(processes: list[psutil.Process], kind: str) -> int:
    total = 0
    for process in processes:
        try:
            memory = process.memory_full_info() if kind == "pss" else process.memory_info()
        except psutil.Error:
            continue
        total += getattr(memory, kind)
    return total


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, recorded beside every measurement."""
    return [float(part) for part in Path("/proc/loadavg").read_text().split()[:3]]


def machine_facts() -> dict:
    import onnxruntime

    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_field("model name"),
        # The vector units decide each engine's share of the FP32 peak, so the ratios.
        "avx512": "avx512f" in _cpu_field("flags").split(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def _cpu_field(name: str) -> str:
    """The first value of ``name`` in /proc/cpuinfo ("" where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    values = (line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == name)
    return next(values, "")


def write_json(name: str, payload: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (RESULTS_DIR / f"{name}-latest.json").write_text(path.read_text())
    return path


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(value.rjust(w) for value, w in zip(row, widths, strict=True)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
