"""Ray's overhead: one table through a two-node local Ray cluster against local workers.

The same ``saliency-assets materialize`` command (``--inference-size 288``, saliency_student_v1,
8 frames, no results store) over a table of 540p clips, once with ``--jobs 2`` (local worker
processes) and once with ``--ray-address`` on a Ray cluster of a head (no CPUs) and two worker
nodes of one CPU each, started on this machine: the same two cores. The cluster is started once,
outside the timings (the premise is an existing cluster); each Ray run still pays its own
connection and actor start-up, as a real run does. Rounds are paired and their order rotates
(local first, then Ray first, ...), so a load change on the shared machine hits both sides alike;
the load average is recorded before every run. Goal: Ray's throughput >= 0.8x local.

It also times, in one process, each distinct clip's decode and its whole computation (decode +
inference): the per-clip costs that ``benchmarks/README.md`` projects to whole corpora.

    python benchmarks/ray_overhead.py                       # 200 clips, 3 paired rounds
    python benchmarks/ray_overhead.py --clips 20 --rounds 1 # a quick look on a busy machine

Needs the ``[ray]`` and ``[bench]`` extras. The 200 table rows name distinct files made from
``--distinct`` rendered clips (hard links), so every row is decoded and inferred.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the local Ray cluster

from common import (  # noqa: E402
    PYTHON,
    RESULTS_DIR,
    machine_facts,
    print_table,
    run_measured,
    shared_model,
    write_json,
)
from corpus import plan_clip, write_clip  # noqa: E402
from support.ray_cluster import LocalRayCluster  # noqa: E402

WORKDIR = RESULTS_DIR / "ray_overhead"
KIND = "540p-h264"
FRAMES = 8
GOAL = 0.8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--distinct", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="saliency_student_v1")
    args = parser.parse_args(argv)
    model = Path(args.model) if args.model.endswith(".onnx") else shared_model(args.model)
    table, distinct = write_corpus(args.clips, args.distinct)
    costs = per_clip_costs(distinct, model)
    facts = machine_facts()
    cluster = LocalRayCluster()
    try:
        runs = paired_rounds(table, model, cluster.start().address, args.rounds)
    finally:
        cluster.stop()
    summary = summarise(runs, args.clips)
    report(runs, costs, summary)
    payload = {"command": " ".join(sys.argv), "model": str(model), "machine": facts}
    payload.update(clips=args.clips, runs=runs, per_clip_costs=costs, summary=summary)
    print(f"\nwrote {write_json('ray_overhead', payload)}")
    return 0


def write_corpus(clips: int, distinct: int) -> tuple[Path, list[Path]]:
    """``clips`` distinct file names over ``distinct`` rendered 540p clips, and their table."""
    rendered = [plan_clip(WORKDIR / "rendered", KIND, number, FRAMES) for number in range(distinct)]
    for clip in rendered:
        if not Path(clip.path).is_file():
            write_clip(clip)
    folder = WORKDIR / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for number in range(clips):
        name = f"clip-{number:05d}.mp4"
        if not (folder / name).exists():
            os.link(rendered[number % distinct].path, folder / name)
        names.append(name)
    table = WORKDIR / f"features-{clips}.jsonl"
    table.write_text("".join(json.dumps({"src": name}) + "\n" for name in names))
    return table, [Path(clip.path) for clip in rendered]


def per_clip_costs(clips: list[Path], model: Path) -> dict:
    """Seconds per clip in one process, one thread: decoding alone, and decode + inference."""
    from saliency_assets.core.contract.config import MaterializeConfig
    from saliency_assets.core.decode.clips import ClipSource
    from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip, decode_for_job
    from saliency_assets.core.model.saliency_model import SaliencyModel

    config = MaterializeConfig(inference_size=288, max_frames=FRAMES, frame_samples=FRAMES)
    job, session = ClipJob.from_config(config, model), SaliencyModel(model)
    compute_clip(ClipSource(clips[0]), job, session)  # warm the session and the libraries
    decode, total = [], []
    for path in clips:
        started = time.perf_counter()
        decode_for_job(ClipSource(path), job)
        decode.append(time.perf_counter() - started)
        started = time.perf_counter()
        compute_clip(ClipSource(path), job, session)
        total.append(time.perf_counter() - started)
    return {
        "decode_s": statistics.median(decode),
        "clip_s": statistics.median(total),
        "inference_s": statistics.median(total) - statistics.median(decode),
        "load_average": os.getloadavg(),
    }


def paired_rounds(table: Path, model: Path, address: str, rounds: int) -> list[dict]:
    runs = []
    for number in range(rounds):
        order = ["local", "ray"] if number % 2 == 0 else ["ray", "local"]
        for side in order:
            runs.append({"round": number, "side": side, **run_side(table, model, address, side)})
            print(f"round {number} {side}: {runs[-1]['seconds']:.1f} s", flush=True)
    return runs


def run_side(table: Path, model: Path, address: str, side: str) -> dict:
    output = WORKDIR / f"out-{side}.jsonl"
    command = [PYTHON, "-m", "saliency_assets.cli", "materialize", "--input", str(table)]
    command += ["--output", str(output), "--root", str(WORKDIR / "clips")]
    command += ["--model-path", str(model), "--inference-size", "288"]
    command += ["--max-frames", str(FRAMES), "--frame-samples", str(FRAMES)]
    command += ["--results-store", "none"]
    command += ["--jobs", "2"] if side == "local" else ["--ray-address", address]
    load = os.getloadavg()
    measured = run_measured(command)
    if measured.returncode != 0:
        raise SystemExit(f"{side} run failed ({measured.returncode}):\n{measured.stderr[-2000:]}")
    return {"seconds": measured.seconds, "load_average_before": load, "output": str(output)}


def summarise(runs: list[dict], clips: int) -> dict:
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["side"]] = run["seconds"]
    ratios = [sides["local"] / sides["ray"] for sides in by_round.values()]
    local = statistics.median(sides["local"] for sides in by_round.values())
    ray = statistics.median(sides["ray"] for sides in by_round.values())
    return {
        "local_clips_per_s": clips / local,
        "ray_clips_per_s": clips / ray,
        "ray_over_local_by_round": ratios,
        "ray_over_local_median": statistics.median(ratios),
        "goal_met": statistics.median(ratios) >= GOAL,
        "outputs_equal": outputs_equal(runs),
    }


def outputs_equal(runs: list[dict]) -> bool:
    """The last local and Ray tables agree within 1e-6 on every row."""
    tables = {}
    for run in runs:
        tables[run["side"]] = [json.loads(line) for line in Path(run["output"]).open()]
    return all(
        abs(a["saliency_mean"] - b["saliency_mean"]) <= 1e-6
        and abs(a["saliency_var"] - b["saliency_var"]) <= 1e-6
        for a, b in zip(tables["local"], tables["ray"], strict=True)
    )


def report(runs: list[dict], costs: dict, summary: dict) -> None:
    rows = [
        [
            run["round"],
            run["side"],
            run["seconds"],
            " ".join(f"{v:.2f}" for v in run["load_average_before"]),
        ]
        for run in runs
    ]
    print_table(["round", "side", "seconds", "load before"], rows)
    print(
        f"\nlocal {summary['local_clips_per_s']:.2f} clips/s, Ray {summary['ray_clips_per_s']:.2f} "
        f"clips/s; Ray / local by round {[round(r, 3) for r in summary['ray_over_local_by_round']]}"
        f", median {summary['ray_over_local_median']:.3f} (goal >= {GOAL}: "
        f"{'met' if summary['goal_met'] else 'MISSED'}); outputs equal: {summary['outputs_equal']}"
    )
    print(
        f"per clip, one process: decode {costs['decode_s']:.3f} s, decode + inference "
        f"{costs['clip_s']:.3f} s (inference {costs['inference_s']:.3f} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
