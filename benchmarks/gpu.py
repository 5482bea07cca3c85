"""The GPU path measured: clips/s with CUDA against the CPU on one machine, and the decode floor.

On a machine with onnxruntime-gpu and a CUDA device, one command:

1. writes ``--clips`` 1080p H.264 clips of 10 frames (moving noise over gradients, made with
   PyAV's own libx264, so nothing but the repository and its dependencies is needed), unless
   ``--clips-dir`` names a folder of clips already there;
2. per mode (compatible ``native`` and ``--inference-size 288``): the product with
   ``--providers CUDAExecutionProvider`` (``--jobs`` workers, default one per core, each
   holding its own CUDA session for the whole run), sampling the GPU's utilisation and memory
   with ``nvidia-smi`` every 200 ms; the same command on the CPU (``--providers auto``); and
   the decode floor: PyAV decoding the same frames (as ``floor.py``: one decoder thread,
   planes only, area-scaled to the inference geometry in 288 mode) in ``--jobs`` processes
   side by side, ``decode_floor_s`` = the busiest process's decode time;
3. prints and writes JSON (``$OUT/gpu-<time>.json`` when ``$OUT`` is set, else
   ``benchmarks/results/``): clips/s per engine, GPU over CPU, the GPU's mean and peak
   utilisation, ``decode share`` = decode_floor_s / GPU wall time (1.0 = bound by decoding)
   and the goal of issue 14 (the GPU run at >= 0.9 of the decode floor).

Where onnxruntime has no CUDA provider or no GPU answers, it says so in one line, writes a
JSON whose ``status`` is ``no-cuda`` and exits 0: nothing was measured.

    python benchmarks/gpu.py                       # 32 clips, both modes
    python benchmarks/gpu.py --clips 8 --modes 288 --jobs 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GOAL_DECODE_SHARE = 0.9
FRAMES = 8
SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.decode_only:
        print(json.dumps(decode_only(args.decode_only, args.paths)))
        return 0
    absent = None if args.dry_run_on_cpu else cuda_absent()
    if absent:
        print(f"gpu.py: {absent}; nothing measured")
        write_result({"status": "no-cuda", "reason": absent, "machine": machine()})
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-bench-"))
    width, height = (int(part) for part in args.geometry.split("x"))
    clips = (
        Path(args.clips_dir)
        if args.clips_dir
        else write_clips(work / "clips", args.clips, width, height)
    )
    sources = sorted(p for p in clips.iterdir() if p.suffix in (".mp4", ".mkv"))
    table = work / "table.jsonl"
    table.write_text("".join(json.dumps({"src": str(path)}) + "\n" for path in sources))
    model = resolve_model(args.model)
    accelerator = CPU if args.dry_run_on_cpu else CUDA
    modes = {}
    for mode in args.modes.split(","):
        modes[mode] = measure_mode(mode, table, sources, model, args.jobs, work, accelerator)
    payload = {"status": "measured", "machine": machine(), "clips": len(sources), "modes": modes}
    payload.update(model=str(model), jobs=args.jobs, accelerator=accelerator)
    report(payload)
    write_result(payload)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="clips to write")
    parser.add_argument("--geometry", default="1920x1080", help="WIDTHxHEIGHT of those clips")
    parser.add_argument(
        "--dry-run-on-cpu",
        action="store_true",
        help="run every step with the CPU provider in place of CUDA (proves the script)",
    )
    parser.add_argument("--clips-dir", help="use these clips instead of writing new ones")
    parser.add_argument("--modes", default="native,288", help="inference sizes compared")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", default="saliency_student_v1", help="name or .onnx path")
    parser.add_argument("--work", help="folder for clips and outputs (default: a temporary one)")
    parser.add_argument("--decode-only", metavar="MODE", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cuda_absent() -> str | None:
    """Why no CUDA run can happen here, or None when onnxruntime and a GPU both answer."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    available = onnxruntime.get_available_providers()
    if CUDA not in available:
        return (
            f"this onnxruntime ({onnxruntime.__version__}) has no {CUDA} (has "
            f"{', '.join(available)}); install onnxruntime-gpu in place of onnxruntime"
        )
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: no NVIDIA driver on this machine"
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"nvidia-smi lists no GPU ({(listed.stderr or listed.stdout).strip()[:200]})"
    return None


def resolve_model(name: str) -> Path:
    if name.endswith(".onnx"):
        return Path(name)
    from common import shared_model

    return shared_model(name)


def write_clips(folder: Path, count: int, width: int, height: int) -> Path:
    """``count`` H.264 clips of 10 frames, each a different seeded moving pattern."""
    import av
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[0:height, 0:width]
    for number in range(count):
        path = folder / f"clip{number:03d}.mp4"
        if path.exists():
            continue
        rng = np.random.default_rng(number)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            for index in range(10):
                base = (cols * (1 + number % 3) + rows * 2 + index * 9) % 256
                grain = rng.normal(0, 4, base.shape)
                luma = np.clip(base + grain, 0, 255).astype(np.uint8)
                rgb = np.stack([luma, np.roll(luma, index * 7, axis=1), luma[::-1]], axis=-1)
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return folder


def measure_mode(
    mode: str, table: Path, sources: list[Path], model: Path, jobs: int, work: Path, accelerator
) -> dict:
    print(f"== {mode}: {len(sources)} clips, {jobs} workers", flush=True)
    with GpuSampler() as gpu:
        cuda = product(mode, table, model, jobs, accelerator, work)
    cpu = product(mode, table, model, jobs, "auto", work)
    decode = decode_floor(sources, mode, jobs)
    clips = len(sources)
    return {
        "gpu_s": cuda["seconds"],
        "cpu_s": cpu["seconds"],
        "gpu_clips_per_s": clips / cuda["seconds"],
        "cpu_clips_per_s": clips / cpu["seconds"],
        "gpu_over_cpu": cpu["seconds"] / cuda["seconds"],
        "gpu_utilisation_mean": gpu.mean_utilisation(),
        "gpu_utilisation_peak": gpu.peak("utilisation"),
        "gpu_memory_peak_mb": gpu.peak("memory_mb"),
        "decode_floor_s": decode,
        "decode_share": decode / cuda["seconds"],
        "goal_met": decode / cuda["seconds"] >= GOAL_DECODE_SHARE,
        "max_abs_diff_gpu_cpu": max_difference(cuda["rows"], cpu["rows"]),
        "engines": {"gpu": cuda["engine"], "cpu": cpu["engine"]},
    }


def product(mode: str, table: Path, model: Path, jobs: int, providers: str, work: Path) -> dict:
    output = work / f"out-{mode}-{providers}.jsonl"
    command = [
        sys.executable, "-m", "saliency_assets.cli", "materialize", "--input", str(table),
        "--output", str(output), "--model-path", str(model), "--inference-size", mode,
        "--jobs", str(jobs), "--max-frames", str(FRAMES), "--frame-samples", str(FRAMES),
        "--results-store", "none", "--providers", providers,
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gpu.py: the {providers} run failed ({done.returncode}):\n"
                         f"{done.stderr[-2000:]}")  # fmt: skip
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    fell_back = "not available" in done.stderr
    engine = "CPU fallback (CUDA was not usable)" if fell_back else providers
    print(f"   {providers}: {seconds:.2f} s ({engine})", flush=True)
    return {"seconds": seconds, "rows": rows, "engine": engine}


def decode_floor(sources: list[Path], mode: str, jobs: int) -> float:
    """The busiest of ``jobs`` decode-only processes side by side, each on every jobs-th clip."""
    shares = [sources[worker::jobs] for worker in range(jobs)]
    with ThreadPoolExecutor(jobs) as pool:
        return max(pool.map(lambda share: _decode_process(share, mode), shares))


def _decode_process(share: list[Path], mode: str) -> float:
    if not share:
        return 0.0
    command = [sys.executable, __file__, "--decode-only", mode, *map(str, share)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu.py: the decode floor failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def decode_only(mode: str, paths: list[str]) -> float:
    """Seconds to decode (as floor.py) the first frames of each clip, in this process."""
    from floor import decode

    size = None if mode == "native" else int(mode)
    started = time.perf_counter()
    for path in paths:
        decode({"path": path}, size, FRAMES)
    return time.perf_counter() - started


class GpuSampler:
    """``nvidia-smi`` every 200 ms in the background while the block runs."""

    def __enter__(self) -> GpuSampler:
        self.samples: list[tuple[float, float]] = []
        self.process = None
        if shutil.which("nvidia-smi") is None:  # a dry run on a machine without a GPU
            return self
        self.process = subprocess.Popen(
            ["nvidia-smi", *SMI_QUERY, "-lms", "200"], stdout=subprocess.PIPE, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            parts = [part.strip() for part in line.split(",")]
            try:
                self.samples.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                continue

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        self.process.wait(timeout=5)
        self.reader.join(timeout=5)

    def mean_utilisation(self) -> float:
        return statistics.fmean(s[0] for s in self.samples) if self.samples else float("nan")

    def peak(self, what: str) -> float:
        index = 0 if what == "utilisation" else 1
        return max((s[index] for s in self.samples), default=float("nan"))


def max_difference(ours: list[dict], theirs: list[dict]) -> float:
    worst = 0.0
    for row, other in zip(ours, theirs, strict=True):
        if row.get("saliency_status") != "ok" or other.get("saliency_status") != "ok":
            return float("inf")
        for key in ("saliency_mean", "saliency_var"):
            worst = max(worst, abs(row[key] - other[key]))
    return worst


def machine() -> dict:
    facts = {"cpus": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    if shutil.which("nvidia-smi"):
        names = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
        facts["gpus"] = names.strip().splitlines()
    return facts


def report(payload: dict) -> None:
    print("\n  mode  GPU c/s  CPU c/s  GPU/CPU  util mean  util peak  decode share  goal>=0.9")
    for mode, m in payload["modes"].items():
        print(
            f"{mode:>6}  {m['gpu_clips_per_s']:7.2f}  {m['cpu_clips_per_s']:7.2f}  "
            f"{m['gpu_over_cpu']:7.2f}  {m['gpu_utilisation_mean']:9.0f}  "
            f"{m['gpu_utilisation_peak']:9.0f}  {m['decode_share']:12.2f}  "
            f"{'met' if m['goal_met'] else 'MISS':>9}"
        )


def write_result(payload: dict) -> Path:
    folder = Path(os.environ["OUT"]) if os.environ.get("OUT") else BENCH_DIR / "results"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    sys.exit(main())
