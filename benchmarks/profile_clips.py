"""Where one worker's time goes: py-spy over the product's per-clip code, summarised by stage.

Runs ``compute_clip`` (the exact code a worker runs) in one process, one thread, over the
corpus clips of one resolution, sampled by py-spy (``--native``: time inside onnxruntime and
FFmpeg is attributed to the Python call that entered it). Prints the share of samples per
stage and the hottest functions, and keeps the raw collapsed stacks (flamegraph input).

    python benchmarks/profile_clips.py --resolution 1080p --mode native
    python benchmarks/profile_clips.py --resolution 2160p --mode 288
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, RESULTS_DIR, print_table, shared_model  # noqa: E402
from corpus import DEFAULT_OUT, load_corpus  # noqa: E402

# Stage -> a function name that marks it in a stack; the first match from the leaf wins.
STAGES = (
    ("onnxruntime session.run", "_run (saliency_assets/core/model/saliency_model.py"),
    ("yuv -> model input", "yuv420p_window_input"),
    ("yuv -> model input", "model_input"),
    ("yuv -> model input", "yuv420p_to_rgb"),
    ("rgb -> model input", "rgb24_to_rgb"),
    ("stitching windows", "run_tiles"),
    ("temporal reduction + stats", "clip_map"),
    ("temporal reduction + stats", "map_statistics"),
    ("decode (PyAV + filters)", "decode_clip"),
    ("model load", "SaliencyModel.__init__"),
    ("model load", "__init__ (saliency_assets/core/model/saliency_model.py"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="1080p")
    parser.add_argument("--mode", default="native", help="'native' or an inference size")
    parser.add_argument("--model", default="saliency_student_v1")
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        return run_clips(args)
    return profile(args)


def profile(args: argparse.Namespace) -> int:
    py_spy = shutil.which("py-spy") or str(Path(PYTHON).with_name("py-spy"))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    raw = RESULTS_DIR / f"profile-{args.resolution}-{args.mode}.collapsed"
    command = [
        py_spy, "record", "--native", "--rate", "200", "--format", "raw", "--output", str(raw),
        "--", PYTHON, __file__, "--inner", "--resolution", args.resolution, "--mode", args.mode,
        "--model", args.model, "--clips", str(args.clips),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"py-spy failed:\n{done.stderr[-2000:]}")
    print(done.stdout.strip())
    summarise(raw)
    print(f"\nraw stacks: {raw}")
    return 0


def run_clips(args: argparse.Namespace) -> int:
    from saliency_assets.core.contract.config import MaterializeConfig
    from saliency_assets.core.decode.clips import ClipSource
    from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip
    from saliency_assets.core.model.saliency_model import SaliencyModel
    from saliency_assets.core.tables.sources import resolve_clip

    size = None if args.mode == "native" else int(args.mode)
    model_path = shared_model(args.model)
    config = MaterializeConfig(model_path=model_path, inference_size=size)
    model = SaliencyModel(model_path)
    job = ClipJob.from_config(config, model_path)
    clips = [c for c in load_corpus(DEFAULT_OUT) if c.kind.startswith(f"{args.resolution}-")]
    started = time.perf_counter()
    for clip in clips[: args.clips]:
        row = {"src": clip.path, "width": clip.width, "height": clip.height}
        source = resolve_clip(row, config)
        assert isinstance(source, ClipSource), source
        result = compute_clip(source, job, model)
        assert result.ok, result.detail
    print(f"{min(len(clips), args.clips)} clips in {time.perf_counter() - started:.1f} s")
    return 0


def summarise(raw: Path) -> None:
    stages: Counter = Counter()
    leaves: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        total += samples
        leaves[_short(frames[-1])] += samples
        stages[_stage(frames)] += samples
    print("\nshare of samples by stage")
    print_table(["stage", "%"], [[name, 100 * n / total] for name, n in stages.most_common()])
    print("\nhottest leaf functions")
    print_table(["function", "%"], [[name, 100 * n / total] for name, n in leaves.most_common(12)])


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, marker in STAGES:
            if marker in frame:
                return name
    return "other (imports, start-up)"


def _short(frame: str) -> str:
    """``name (file:line)``; native frames without a symbol are grouped by their library."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    if name.startswith("0x"):
        return f"[native] {Path(where).name}"
    return f"{name} ({Path(where).name})"


if __name__ == "__main__":
    sys.exit(main())
