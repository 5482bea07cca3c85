"""What HDR tone-mapping costs per 1080p frame, and what it does to the numbers.

Makes a 1080p SDR clip (tests/support/hdr_clips.py's scene) and its PQ and HLG renditions
(BT.2408: SDR 100 % at 203 cd/m², 10-bit BT.2020 HEVC), then:

1. cost: decodes the sampled frames of each rendition in-process (decode + conversion, no
   model) in paired rounds whose order rotates, in both modes; reports ms per frame and the
   ratio of each HDR rendition to the SDR clip, with the load average before and after;
2. numbers: saliency_mean of each rendition with ``--hdr off`` (the older tool: before) and
   ``tonemap`` (after), relative to the SDR clip, with the given model.

    python benchmarks/hdr_cost.py                    # saliency_student_v1, 8 frames, 5 rounds
    python benchmarks/hdr_cost.py --rounds 9 --model saliency_student_v2

Writes benchmarks/results/hdr_cost.json and prints both tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import RESULTS_DIR, machine_facts, print_table, shared_model, write_json  # noqa: E402
from support.hdr_clips import make_hdr_rendition, make_scene_clip  # noqa: E402

from saliency_assets.core.clip_saliency import ClipJob, compute_clip  # noqa: E402
from saliency_assets.core.clips import ClipSource, SamplingPlan  # noqa: E402
from saliency_assets.core.decoding import decode_clip  # noqa: E402
from saliency_assets.core.model import SaliencyModel  # noqa: E402

MODES = {"native": None, "288": 288}
RENDITIONS = ("sdr", "pq", "hlg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="saliency_student_v1")
    args = parser.parse_args()
    clips = make_clips(RESULTS_DIR / "hdr", args.frames)
    load_before = os.getloadavg()
    cost = measure_cost(clips, args.frames, args.rounds)
    load_after_cost = os.getloadavg()
    numbers = measure_numbers(clips, args.frames, shared_model(args.model))
    write_json(
        "hdr_cost",
        {
            "machine": machine_facts(),
            "load_average": {"before": load_before, "after_cost": load_after_cost},
            "frames": args.frames,
            "rounds": args.rounds,
            "model": args.model,
            "cost_ms_per_frame": cost,
            "saliency_mean": numbers,
        },
    )
    print(f"load average before {load_before}, after the cost rounds {load_after_cost}")
    print_cost(cost)
    print_numbers(numbers)


def make_clips(folder: Path, frames: int) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sdr = folder / "scene_1080p.mp4"
    if not sdr.is_file():
        make_scene_clip(sdr, 1920, 1080, frames)
    clips = {"sdr": sdr}
    for transfer in ("pq", "hlg"):
        path = folder / f"scene_1080p_{transfer}.mkv"
        if not path.is_file():
            make_hdr_rendition(sdr, path, transfer)
        clips[transfer] = path
    return clips


def measure_cost(clips: dict[str, Path], frames: int, rounds: int) -> dict:
    """Median ms per decoded+converted frame per mode and rendition, over rotated rounds."""
    timings = {mode: {name: [] for name in RENDITIONS} for mode in MODES}
    for round_index in range(rounds):
        order = RENDITIONS[round_index % 3 :] + RENDITIONS[: round_index % 3]
        for mode, size in MODES.items():
            plan = SamplingPlan(max_frames=frames, frame_samples=frames, inference_size=size)
            for name in order:
                started = time.perf_counter()
                decode_clip(ClipSource(clips[name]), plan)
                timings[mode][name].append((time.perf_counter() - started) * 1000 / frames)
    summary = {}
    for mode, by_name in timings.items():
        sdr = statistics.median(by_name["sdr"])
        summary[mode] = {
            name: {
                "median_ms": statistics.median(values),
                "ratio_to_sdr": statistics.median(values) / sdr,
                "all_ms": values,
            }
            for name, values in by_name.items()
        }
    return summary


def measure_numbers(clips: dict[str, Path], frames: int, model_path: Path) -> dict:
    """saliency_mean per mode, hdr setting and rendition."""
    model = SaliencyModel(model_path)
    numbers: dict = {}
    for mode, size in MODES.items():
        for hdr in ("off", "tonemap"):
            plan = SamplingPlan(frames, frames, "head", size, hdr)
            job = ClipJob(plan, "mean", 0.6, model_path, ("CPUExecutionProvider",))
            numbers.setdefault(mode, {})[hdr] = {
                name: compute_clip(ClipSource(clips[name]), job, model).saliency_mean
                for name in RENDITIONS
            }
    return numbers


def print_cost(cost: dict) -> None:
    rows = [
        [mode, name, f"{entry['median_ms']:.1f}", f"{entry['ratio_to_sdr']:.2f}"]
        for mode, by_name in cost.items()
        for name, entry in by_name.items()
    ]
    print_table(["mode", "rendition", "ms per frame (decode+convert)", "x SDR"], rows)


def print_numbers(numbers: dict) -> None:
    rows = []
    for mode, by_hdr in numbers.items():
        for hdr, values in by_hdr.items():
            sdr = values["sdr"]
            rows.append(
                [mode, hdr, f"{sdr:.4f}"]
                + [f"{values[name]:.4f} ({values[name] / sdr - 1:+.1%})" for name in ("pq", "hlg")]
            )
    print_table(["mode", "--hdr", "SDR", "PQ (vs SDR)", "HLG (vs SDR)"], rows)


if __name__ == "__main__":
    main()
