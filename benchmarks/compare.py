"""Baseline vs floor vs the product (compatible mode and an inference size), on the same clips.

For every resolution of the corpus, in one run:

1. ``baseline.py``: the reference pipeline, one clip at a time;
2. ``floor.py`` per mode: decode-only plus inference-only time, in as many processes side by
   side as the product has workers (``--serial-floor`` also times it in one process alone);
3. the product, ``saliency-assets materialize`` over a table of those clips, once in
   compatible mode (``--inference-size native``) and once with ``--inference-size 288``.

Every command is a separate process whose wall time and peak RSS (summed over its whole
process tree, sampled every 20 ms) are recorded. The measurements run in ``--rounds`` rounds,
each in a rotated order (round r starts with the r-th measurement), with ``/proc/loadavg``
recorded before and after each one; every ratio is taken within a round (paired) and the
median over the rounds is reported, with each round's ratios and loads in the JSON.
Compatible-mode values are checked against the baseline's (|difference| <= 1e-6). Prints a
table with every figure as a ratio to the baseline and to the floor, checks the performance
targets, and writes
``benchmarks/results/compare-<time>.json``.

    python benchmarks/corpus.py && python benchmarks/compare.py
    python benchmarks/compare.py --resolutions 1080p --model saliency_student_v2
    python benchmarks/compare.py --serial-floor        # also the one-process floor
    python benchmarks/compare.py --resolutions 1080p --clips 3 --modes native --rounds 5
                                                       # the few-clips case (issue 14)
    python benchmarks/compare.py --resolutions 540p --clips 200 --modes sized --no-baseline
                                                       # a long run against its floor only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    RESULTS_DIR,
    ffmpeg_binary,
    loadavg,
    machine_facts,
    print_table,
    run_measured,
    shared_model,
    table_row,
    write_json,
)
from corpus import DEFAULT_OUT, RESOLUTIONS, load_corpus  # noqa: E402
from scaling import ensure_clips  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = RESULTS_DIR / "work"
TOLERANCE = 1e-6
NOT_RUN = float("nan")
NO_BASELINE = {
    "measured": {"seconds": NOT_RUN, "peak_rss_mb": NOT_RUN, "peak_pss_mb": NOT_RUN},
    "clips": None,
}
_MODE_KEYS = (
    "native_s", "native_clips_per_s", "native_speedup", "native_peak_mb", "native_peak_pss_mb",
    "native_floor_s", "native_floor_decode_s", "native_floor_infer_s", "native_floor_ratio",
    "native_floor_ratio_after_startup", "native_ok", "native_serial_floor_s",
    "native_serial_floor_ratio", "native_peak_over_baseline", "native_peak_pss_over_baseline",
)  # fmt: skip
MEMORY_LIMIT_MB = 1000.0
_ROUND_KEYS = (
    "baseline_s", "native_s", "sized_s", "native_speedup", "sized_speedup", "native_floor_ratio",
    "sized_floor_ratio", "baseline_peak_mb", "native_peak_mb", "sized_peak_mb",
)  # fmt: skip
TARGETS = (
    # (description, resolution, metric key, comparison, threshold)
    ("compatible >= 1.6x baseline clips/s at 1080p", "1080p", "native_speedup", ">=", 1.6),
    ("compatible peak memory <= 1 GB at 2160p", "2160p", "native_peak_mb", "<=", 1000.0),
    # RSS summed counts a page shared by several of our processes once per process (the
    # libraries a worker shares with the forkserver it forked from); PSS splits it between them.
    (
        "compatible peak memory (RSS summed) <= the baseline's",
        "*",
        "native_peak_over_baseline",
        "<=",
        1.0,
    ),
    (
        "compatible peak memory (PSS summed) <= the baseline's",
        "*",
        "native_peak_pss_over_baseline",
        "<=",
        1.0,
    ),
    ("compatible values within 1e-6 of the baseline", "*", "native_max_abs_diff", "<=", 1e-6),
    ("--inference-size 288 >= 10x baseline at 1080p", "1080p", "sized_speedup", ">=", 10.0),
    ("--inference-size 288 >= 40x baseline at 2160p", "2160p", "sized_speedup", ">=", 40.0),
    ("--inference-size 288 floor/ours >= 0.9", "*", "sized_floor_ratio", ">=", 0.9),
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = Path(args.model) if args.model.endswith(".onnx") else shared_model(args.model)
    clips = load_corpus(Path(args.corpus))
    resolutions = [r for r in args.resolutions.split(",") if r]
    facts = machine_facts()
    startup = measure_startup(model, args)
    groups = []
    for resolution in resolutions:
        group = [clip for clip in clips if clip.kind.startswith(f"{resolution}-")]
        group = group[: args.clips] if args.clips else group
        if group:
            groups.append(run_group(resolution, [vars(c) for c in group], model, args, startup))
    payload = {
        "command": " ".join(sys.argv),
        "model": str(model),
        "jobs": args.jobs,
        "rounds": args.rounds,
        "providers": args.providers,
        "inference_size": args.size,
        "machine": facts,
        "load_average_at_end": os.getloadavg(),
        "startup_s": startup,
        "groups": groups,
    }
    payload["targets"] = check_targets(groups)
    report(groups, payload["targets"], args)
    print(f"\nwrote {write_json('compare', payload)}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEFAULT_OUT))
    parser.add_argument("--resolutions", default=",".join(RESOLUTIONS))
    parser.add_argument("--model", default="saliency_student_v1", help="name or .onnx path")
    parser.add_argument("--jobs", type=int, default=2, help="the product's worker processes")
    parser.add_argument("--size", type=int, default=288, help="the inference size compared")
    parser.add_argument(
        "--modes", default="native,sized", help="which product modes to run (native, sized)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rotated paired rounds")
    parser.add_argument("--clips", type=int, default=0, help="first N clips per resolution")
    parser.add_argument("--providers", default="auto", help="the product's and floor's --providers")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip baseline.py (a long run measured against its floor only)",
    )
    parser.add_argument(
        "--serial-floor",
        action="store_true",
        help="also time the floor in one process alone, divided by --jobs (no contention)",
    )
    return parser.parse_args(argv)


def measure_startup(model: Path, args) -> dict[str, float]:
    """The product's fixed cost per mode: the same command over one frame of one 64x48 clip."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    table = WORK_DIR / "startup-table.jsonl"
    table.write_text(json.dumps({"src": ensure_clips(1)[0]}) + "\n")
    startup = {}
    for label, mode in _modes(args):
        product = _product(
            "startup", table, model, mode, args.jobs, frames=1, providers=args.providers
        )
        startup[label] = product["measured"]["seconds"]
    return startup


def run_group(resolution: str, clips: list[dict], model: Path, args, startup: dict) -> dict:
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    clips_json = WORK_DIR / f"{resolution}-clips.json"
    clips_json.write_text(json.dumps(clips))
    table = WORK_DIR / f"{resolution}-table.jsonl"
    table.write_text("".join(json.dumps(table_row(clip)) + "\n" for clip in clips))
    print(f"== {resolution}: {len(clips)} clips, {args.rounds} rounds", flush=True)
    steps = {"baseline": lambda: _baseline(resolution, clips_json, model)}
    if args.no_baseline:
        steps = {"baseline": lambda: NO_BASELINE}
    for label, mode in _modes(args):
        steps[f"floor {label}"] = _floor_step(resolution, clips, model, mode, args)
        steps[f"product {label}"] = _product_step(resolution, table, model, mode, args)
    rounds = [_round(number, steps) for number in range(args.rounds)]
    summaries = [
        summarise(resolution, clips, done["baseline"], _round_modes(done, args), args.jobs, startup)
        for done in rounds
    ]
    return combine_rounds(summaries, rounds)


def _round(number: int, steps: dict) -> dict:
    """One round: every measurement once, starting at the ``number``-th (rotated order)."""
    names = list(steps)
    order = names[number % len(names) :] + names[: number % len(names)]
    done: dict = {"order": order, "loadavg": {}}
    for name in order:
        before = loadavg()
        done[name] = steps[name]()
        done["loadavg"][name] = {"before": before, "after": loadavg()}
    print(f"   round {number + 1}: load {done['loadavg']}", flush=True)
    return done


def _round_modes(done: dict, args) -> dict:
    return {
        label: {"mode": mode, "floor": done[f"floor {label}"], "product": done[f"product {label}"]}
        for label, mode in _modes(args)
    }


def _floor_step(resolution, clips, model, mode, args):
    def step() -> dict:
        floor = {"concurrent": _floor(resolution, clips, model, mode, args.jobs, args.providers)}
        if args.serial_floor:
            floor["serial"] = _floor(resolution, clips, model, mode, 1, args.providers)
        return floor

    return step


def _product_step(resolution, table, model, mode, args):
    return lambda: _product(resolution, table, model, mode, args.jobs, providers=args.providers)


def combine_rounds(summaries: list[dict], rounds: list[dict]) -> dict:
    """The median of every figure over the rounds (ratios paired within each round); the
    largest value difference and memory peak; each round's own figures and loads kept."""
    combined = dict(summaries[0])
    for key, value in summaries[0].items():
        if isinstance(value, float) and key != "native_max_abs_diff" and "peak" not in key:
            combined[key] = statistics.median(summary[key] for summary in summaries)
        elif isinstance(value, float):
            combined[key] = max(summary[key] for summary in summaries)
    combined["rounds"] = [
        {
            "order": done["order"],
            "loadavg": done["loadavg"],
            **{key: summary[key] for key in _ROUND_KEYS if key in summary},
        }
        for done, summary in zip(rounds, summaries, strict=True)
    ]
    combined["detail"] = [summary["detail"] for summary in summaries]
    return combined


def _baseline(resolution: str, clips_json: Path, model: Path) -> dict:
    output = WORK_DIR / f"{resolution}-baseline.json"
    command = [
        PYTHON, str(BENCH_DIR / "baseline.py"), "--clips", str(clips_json), "--model",
        str(model), "--ffmpeg", ffmpeg_binary(), "--output", str(output),
    ]  # fmt: skip
    measured = _checked(run_measured(command), "baseline")
    print(f"   baseline {measured.seconds:.1f} s", flush=True)
    return {"measured": vars(measured), "clips": json.loads(output.read_text())}


def _floor(
    resolution: str, clips: list[dict], model: Path, mode: str, processes: int, providers: str
) -> list:
    """Per-clip floor timings from ``processes`` floor processes run side by side, each on
    every ``processes``-th clip; each clip is tagged with its process."""
    commands, outputs = [], []
    for process in range(processes):
        share = WORK_DIR / f"{resolution}-floor-{mode}-{processes}-{process}-clips.json"
        share.write_text(json.dumps(clips[process::processes]))
        outputs.append(WORK_DIR / f"{resolution}-floor-{mode}-{processes}-{process}.json")
        commands.append([
            PYTHON, str(BENCH_DIR / "floor.py"), "--clips", str(share), "--model", str(model),
            "--mode", mode, "--output", str(outputs[-1]), "--providers", providers,
        ])  # fmt: skip
    with ThreadPoolExecutor(processes) as pool:
        for measured in pool.map(run_measured, commands):
            _checked(measured, "floor")
    timed = []
    for process, output in enumerate(outputs):
        timed += [{**clip, "process": process} for clip in json.loads(output.read_text())]
    return timed


def floor_seconds(timed: list[dict], jobs: int) -> float:
    """The floor's wall time with ``jobs`` workers: the busiest floor process's work, or, for
    a one-process (serial) floor, its work spread evenly over ``jobs`` workers."""
    work: dict[int, float] = {}
    for clip in timed:
        work[clip["process"]] = work.get(clip["process"], 0.0) + clip["decode_s"] + clip["infer_s"]
    if len(work) == 1:
        return sum(work.values()) / jobs
    return max(work.values())


def _product(
    resolution: str,
    table: Path,
    model: Path,
    mode: str,
    jobs: int,
    frames: int = 8,
    providers: str = "auto",
) -> dict:
    output = WORK_DIR / f"{resolution}-product-{mode}.jsonl"
    command = [
        PYTHON, "-m", "saliency_assets.cli", "materialize", "--input", str(table), "--output",
        str(output), "--model-path", str(model), "--inference-size", mode, "--jobs", str(jobs),
        "--max-frames", str(frames), "--frame-samples", str(frames), "--results-store", "none",
    ]  # fmt: skip
    if providers != "auto":  # auto is the product's default: the command a user runs
        command += ["--providers", providers]
    measured = _checked(run_measured(command), f"product {mode}")
    print(f"   product {mode} {measured.seconds:.1f} s", flush=True)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    return {"measured": vars(measured), "rows": rows}


def summarise(
    resolution: str, clips: list[dict], baseline: dict, modes: dict, jobs: int, startup: dict
) -> dict:
    count = len(clips)
    baseline_s = baseline["measured"]["seconds"]
    summary = {
        "resolution": resolution,
        "clips": count,
        "kinds": sorted({clip["kind"] for clip in clips}),
        "baseline_s": baseline_s,
        "baseline_clips_per_s": count / baseline_s,
        "baseline_peak_mb": baseline["measured"]["peak_rss_mb"],
        "baseline_peak_pss_mb": baseline["measured"]["peak_pss_mb"],
        "startup_s": startup,
    }
    for label, mode in modes.items():
        product = mode["product"]
        seconds = product["measured"]["seconds"]
        floor_clips = mode["floor"]["concurrent"]
        floor_s = floor_seconds(floor_clips, jobs)
        serial = mode["floor"].get("serial")
        serial_s = floor_seconds(serial, jobs) if serial else NOT_RUN
        processes = len({clip["process"] for clip in floor_clips})
        summary.update(
            {
                f"{label}_s": seconds,
                f"{label}_clips_per_s": count / seconds,
                f"{label}_speedup": baseline_s / seconds,
                f"{label}_peak_mb": product["measured"]["peak_rss_mb"],
                f"{label}_peak_pss_mb": product["measured"]["peak_pss_mb"],
                f"{label}_peak_over_baseline": (
                    product["measured"]["peak_rss_mb"] / baseline["measured"]["peak_rss_mb"]
                ),
                f"{label}_peak_pss_over_baseline": (
                    product["measured"]["peak_pss_mb"] / baseline["measured"]["peak_pss_mb"]
                ),
                f"{label}_floor_s": floor_s,
                f"{label}_floor_decode_s": sum(c["decode_s"] for c in floor_clips) / processes,
                f"{label}_floor_infer_s": sum(c["infer_s"] for c in floor_clips) / processes,
                f"{label}_floor_ratio": floor_s / seconds,
                f"{label}_serial_floor_s": serial_s,
                f"{label}_serial_floor_ratio": serial_s / seconds,
                f"{label}_floor_ratio_after_startup": floor_s / (seconds - startup[label]),
                f"{label}_ok": sum(row.get("saliency_status") == "ok" for row in product["rows"]),
            }
        )
    for label in ("native", "sized"):
        if label not in modes:
            summary.update({key.replace("native", label): NOT_RUN for key in _MODE_KEYS})
    summary["native_max_abs_diff"] = (
        _max_difference(baseline["clips"], modes["native"]) if "native" in modes else NOT_RUN
    )
    summary["detail"] = {"baseline": baseline, "modes": modes}
    return summary


def check_targets(groups: list[dict]) -> list[dict]:
    outcomes = []
    for description, resolution, key, comparison, threshold in TARGETS:
        chosen = [g for g in groups if resolution in ("*", g["resolution"])]
        if not chosen:
            outcomes.append({"target": description, "status": "not run"})
            continue
        values = {g["resolution"]: g[key] for g in chosen}
        if any(math.isnan(value) for value in values.values()):
            outcomes.append({"target": description, "status": "not run"})
            continue
        met = all(
            (value >= threshold) if comparison == ">=" else (value <= threshold)
            for value in values.values()
        )
        outcomes.append({"target": description, "measured": values, "met": met})
    return outcomes


def report(groups: list[dict], targets: list[dict], args) -> None:
    size = args.size
    print("\nthroughput (clips/s) and ratios to the baseline; floor/ours = floor_s / product_s")
    print(
        "startup (the same command over one frame of a 64x48 clip): "
        + json.dumps(startup_of(groups))
    )
    print_table(
        [
            "res",
            "clips",
            "base c/s",
            "compat c/s",
            "compat x",
            f"{size} c/s",
            f"{size} x",
            "compat floor/ours",
            f"{size} floor/ours",
            f"{size} floor/(ours-startup)",
            "max|diff|",
        ],  # fmt: skip
        [
            [
                g["resolution"],
                g["clips"],
                g["baseline_clips_per_s"],
                g["native_clips_per_s"],
                g["native_speedup"],
                g["sized_clips_per_s"],
                g["sized_speedup"],
                g["native_floor_ratio"],
                g["sized_floor_ratio"],
                g["sized_floor_ratio_after_startup"],
                f"{g['native_max_abs_diff']:.1e}",
            ]  # fmt: skip
            for g in groups
        ],
    )
    print("\npeak memory of the whole process tree, MB: RSS summed (PSS summed)")
    print_table(
        ["res", "baseline", "compat", f"{size}"],
        [
            [g["resolution"]]
            + [
                f"{g[f'{key}_peak_mb']:.0f} ({g[f'{key}_peak_pss_mb']:.0f})"
                for key in ("baseline", "native", "sized")
            ]
            for g in groups
        ],
    )
    print(
        "\nseconds: wall time of each command; floor = decode + infer of the busiest of the "
        "floor processes run side by side; serial floor = one process alone, work / jobs"
    )
    print_table(
        [
            "res",
            "baseline",
            "compat",
            f"{size}",
            "floor compat",
            f"floor {size}",
            "serial floor compat",
            f"serial floor {size}",
            "floor decode compat",
            "floor decode " + str(size),
        ],  # fmt: skip
        [
            [
                g["resolution"],
                g["baseline_s"],
                g["native_s"],
                g["sized_s"],
                g["native_floor_s"],
                g["sized_floor_s"],
                g["native_serial_floor_s"],
                g["sized_serial_floor_s"],
                g["native_floor_decode_s"],
                g["sized_floor_decode_s"],
            ]  # fmt: skip
            for g in groups
        ],
    )
    print(f"\nper round (paired): compat x, {size} x, load average (1 min) before each measurement")
    for g in groups:
        for number, done in enumerate(g["rounds"], 1):
            loads = ", ".join(
                f"{name} {load['before'][0]:.2f}" for name, load in done["loadavg"].items()
            )
            print(
                f"  {g['resolution']} round {number}: compat x {_short(done['native_speedup'])}, "
                f"{size} x {_short(done['sized_speedup'])}; load: {loads}"
            )
    print("\ntargets (2 cores)")
    for outcome in targets:
        if "met" not in outcome:
            print(f"  [----] {outcome['target']}: not run")
            continue
        shown = ", ".join(f"{res} {_short(value)}" for res, value in outcome["measured"].items())
        print(f"  [{'met ' if outcome['met'] else 'MISS'}] {outcome['target']}: {shown}")


def _modes(args) -> list[tuple[str, str]]:
    chosen = {part.strip() for part in args.modes.split(",")}
    return [
        (label, mode)
        for label, mode in (("native", "native"), ("sized", str(args.size)))
        if label in chosen
    ]


def startup_of(groups: list[dict]) -> dict:
    return groups[0]["startup_s"] if groups else {}


def _max_difference(baseline_clips: list[dict] | None, native: dict) -> float:
    if baseline_clips is None:
        return NOT_RUN
    expected = {clip["name"]: clip for clip in baseline_clips}
    worst = 0.0
    for row in native["product"]["rows"]:
        reference = expected[Path(row["src"]).stem]
        if row.get("saliency_status") != "ok" or reference["status"] != "ok":
            return float("inf")
        for ours, theirs in (("saliency_mean", "mean"), ("saliency_var", "var")):
            worst = max(worst, abs(row[ours] - reference[theirs]))
    return worst


def _checked(measured, what: str):
    if measured.returncode != 0:
        raise SystemExit(f"{what} failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def _short(value: float) -> str:
    return f"{value:.1e}" if abs(value) < 1e-3 else f"{value:.3g}"


if __name__ == "__main__":
    sys.exit(main())
