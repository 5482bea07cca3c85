"""What HDR tone-mapping costs per 1080p frame, and what it does to the numbers.

Makes a 1080p SDR clip (tests/support/hdr_clips.py's scene) and its PQ and HLG renditions
(BT.2408: SDR 100 % at 203 cd/m², 10-bit BT.2020 HEVC), then:

1. cost: converts each rendition's decoded frames through the filter graph of each mode, each
   HDR file with and without the conversion, in rounds whose order rotates; reports the median
   ms per frame, what the conversion adds and the ratio to the same frames without it, with
   the load average before and after;
2. numbers: saliency_mean of each rendition with ``--hdr off`` (the older tool: before) and
   ``tonemap`` (after), relative to the SDR clip, with the given model.

    python benchmarks/hdr_cost.py                    # saliency_student_v1, 8 frames, 5 rounds
    python benchmarks/hdr_cost.py --rounds 9 --model saliency_student_v2

Writes benchmarks/results/hdr_cost.json and prints both tables.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import RESULTS_DIR, machine_facts, print_table, shared_model, write_json  # noqa: E402
from support.hdr_clips import make_hdr_rendition, make_scene_clip  # noqa: E402

from saliency_assets.core.decode import hdr as hdr_module  # noqa: E402
from saliency_assets.core.decode.clips import ClipSource, SamplingPlan  # noqa: E402
from saliency_assets.core.decode.conversion import (  # noqa: E402
    ColourTags,
    FrameConverter,
    tonemap_filters,
)
from saliency_assets.core.decode.hdr import HdrFormat  # noqa: E402
from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip  # noqa: E402
from saliency_assets.core.model.saliency_model import SaliencyModel  # noqa: E402

MODES = {"native": None, "288": 288}
RENDITIONS = ("sdr", "pq", "hlg")
CASES = ("sdr/tonemap", "pq/off", "pq/tonemap", "hlg/off", "hlg/tonemap")
SETUP_BUFFER = (
    "video_size=1920x1080:pix_fmt=yuv420p10le:time_base=1/25:pixel_aspect=1/1:colorspace=9:range=1"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="saliency_student_v1")
    parser.add_argument("--cost-only", action="store_true", help="skip the saliency numbers")
    args = parser.parse_args()
    clips = make_clips(RESULTS_DIR / "hdr", args.frames)
    load_before = os.getloadavg()
    setup = first_clip_setup()
    cost = measure_cost(clips, args.frames, args.rounds)
    load_after_cost = os.getloadavg()
    numbers = (
        {} if args.cost_only else measure_numbers(clips, args.frames, shared_model(args.model))
    )
    write_json(
        "hdr_cost",
        {
            "machine": machine_facts(),
            "load_average": {"before": load_before, "after_cost": load_after_cost},
            "frames": args.frames,
            "rounds": args.rounds,
            "model": args.model,
            "cost_ms_per_frame": cost,
            "first_clip_setup": setup,
            "saliency_mean": numbers,
        },
    )
    print(f"load average before {load_before}, after the cost rounds {load_after_cost}")
    print(
        f"once per format and process: LUTs {setup['luts_s']:.2f} s, graph {setup['graph_s']:.3f} s"
    )
    print_cost(cost)
    if numbers:
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
    """Median ms to convert one decoded 1080p frame, per mode and case (no decoding).

    Each file's frames are decoded once; then every round converts them through each case's
    graph, in an order that rotates, with the graph already built (as a worker's is after its
    first clip of a format). ``pq/off`` is the same 10-bit frames through today's SDR path
    (``--hdr off``), so ``pq/tonemap`` minus ``pq/off`` is what the conversion adds.
    """
    decoded = {name: _decoded_frames(path, frames) for name, path in clips.items()}
    timings = {mode: {case: [] for case in CASES} for mode in MODES}
    for round_index in range(rounds):
        shift = round_index % len(CASES)
        for mode, size in MODES.items():
            for case in CASES[shift:] + CASES[:shift]:
                name, hdr = case.split("/")
                converter = FrameConverter(size, hdr=hdr)
                converter.convert(decoded[name][0], 0)  # builds (or finds) the graph
                for index, frame in enumerate(decoded[name]):
                    started = time.perf_counter()
                    converter.convert(frame, index)
                    timings[mode][case].append((time.perf_counter() - started) * 1000)
    return {mode: _cost_summary(by_case) for mode, by_case in timings.items()}


def _decoded_frames(path: Path, frames: int) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(itertools.islice(container.decode(video=0), frames))


def _cost_summary(by_case: dict[str, list[float]]) -> dict:
    medians = {case: statistics.median(values) for case, values in by_case.items()}
    summary = {}
    for case, values in by_case.items():
        unconverted = medians.get(case.replace("tonemap", "off"), medians[case])  # SDR: itself
        summary[case] = {
            "median_ms": medians[case],
            "conversion_ms": medians[case] - unconverted,
            "ratio_to_unconverted": medians[case] / unconverted,
            "all_ms": values,
        }
    return summary


def first_clip_setup() -> dict:
    """Seconds to compute and write one format's LUTs, and to configure a graph reading them."""
    fmt = HdrFormat("pq", True, 1000.0)
    hdr_module._written_luts.cache_clear()
    shutil.rmtree(Path(tempfile.gettempdir()) / hdr_module.LUT_DIR_NAME, ignore_errors=True)
    started = time.perf_counter()
    hdr_module.lut_files(fmt)
    luts_s = time.perf_counter() - started
    colour = ColourTags("bt2020", False)
    started = time.perf_counter()
    graph = av.filter.Graph()
    chain = [graph.add("buffer", SETUP_BUFFER)]
    for name, args in tonemap_filters(fmt, colour, 1920, 1080, inference=False):
        chain.append(graph.add(name, args))
    chain.append(graph.add("buffersink"))
    graph.link_nodes(*chain)
    graph.configure()
    return {"luts_s": luts_s, "graph_s": time.perf_counter() - started}


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
        [
            mode,
            case,
            f"{entry['median_ms']:.1f}",
            f"{entry['conversion_ms']:.1f}",
            f"{entry['ratio_to_unconverted']:.2f}",
        ]
        for mode, by_case in cost.items()
        for case, entry in by_case.items()
    ]
    headers = ["mode", "clip/--hdr", "ms per frame (graph)", "added ms", "x unconverted"]
    print_table(headers, rows)


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
