"""Dagster's cost around the engine: partition registration, bookkeeping share, runs vs the CLI.

Measures, in one command on the same generated clips:
  1. seconds to register N dynamic partition keys (default 150,000) on a fresh SQLite instance,
     in chunks of 10,000, as source_table does;
  2. a batched clip_saliency run over C clips (default 1,000) partitioned by clip, and the same
     clips partitioned into hash shards: wall time, time inside the engine, and Dagster's
     bookkeeping share = (run wall time - engine time) / run wall time;
  3. the CLI (`saliency-assets materialize`) on the same clips: clips/s, as the baseline the
     Dagster runs are compared with.
Prints a table and writes benchmarks/results/dagster_overhead.json.

    .venv/bin/python benchmarks/dagster_overhead.py [--clips 1000] [--keys 150000]
    # real per-clip work (about 0.5 s a clip): 540p clips at --inference-size 288, per clip only
    .venv/bin/python benchmarks/dagster_overhead.py --width 960 --height 540 \
        --inference-size 288 --partitionings clips --keys 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from saliency_assets.defs.partitions import sync_partitions
from saliency_assets.demo import DemoClip, write_demo_clip

RESULTS = Path(__file__).resolve().parent / "results"
DISTINCT_CLIPS = 8


def main() -> None:
    args = _parse_args()
    with tempfile.TemporaryDirectory(prefix="dagster-overhead-") as scratch:
        work = Path(scratch)
        figures = {"registration": measure_registration(work / "reg_home", args.keys)}
        table = make_corpus(work / "corpus", args.clips, args.width, args.height)
        cli = measure_cli(table, work, args.jobs, args.inference_size)
        figures["cli"] = cli
        for partitioning in args.partitionings.split(","):
            figures[f"dagster_{partitioning}"] = measure_dagster_run(
                table, work, partitioning, args, cli["seconds"]
            )
    figures["settings"] = vars(args)
    _report(figures)


def measure_registration(home: Path, count: int) -> dict | None:
    if count <= 0:
        return None
    home.mkdir(parents=True)
    keys = [f"clip_{index:06d}.mp4" for index in range(count)]
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        started = time.perf_counter()
        sync_partitions(instance, "bench_clips", keys)
        seconds = time.perf_counter() - started
        assert len(instance.get_dynamic_partitions("bench_clips")) == count
    return {"keys": count, "seconds": round(seconds, 2)}


def make_corpus(folder: Path, clips: int, width: int, height: int) -> Path:
    """``clips`` uniquely named clips: hard links to a few distinct real encodes."""
    sources = folder / "distinct"
    sources.mkdir(parents=True)
    distinct = []
    for index in range(DISTINCT_CLIPS):
        path = sources / f"d{index}.mp4"
        write_demo_clip(path, DemoClip(path.name, width + 16 * index, height, "libx264"))
        distinct.append(path)
    clip_dir = folder / "clips"
    clip_dir.mkdir()
    rows = []
    for index in range(clips):
        name = f"clip_{index:05d}.mp4"
        os.link(distinct[index % DISTINCT_CLIPS], clip_dir / name)
        rows.append({"src": name})
    table = folder / "features.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return table


def measure_cli(table: Path, work: Path, jobs: int, inference_size: str) -> dict:
    output = work / "cli_out.jsonl"
    command = [
        sys.executable,
        "-m",
        "saliency_assets.cli",
        "materialize",
        "--input",
        str(table),
        "--output",
        str(output),
        "--root",
        str(table.parent / "clips"),
        "--results-store",
        "none",
        "--jobs",
        str(jobs),
        "--inference-size",
        inference_size,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    clips = sum(1 for _ in table.open())
    return {"clips": clips, "seconds": round(seconds, 2), "clips_per_s": round(clips / seconds, 2)}


def measure_dagster_run(
    table: Path, work: Path, partitioning: str, args: argparse.Namespace, cli_seconds: float
) -> dict:
    clips = args.clips
    run_dir = work / f"dagster_{partitioning}"
    run_dir.mkdir()
    manifest = _write_manifest(run_dir, table, partitioning, args.jobs, args.inference_size)
    os.environ["SALIENCY_ASSETS_MANIFESTS"] = str(manifest)
    from saliency_assets.definitions import build_definitions

    defs = build_definitions()
    home = run_dir / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        defs.resolve_job_def("saliency_bench_refresh").execute_in_process(instance=instance)
        first, last = _partition_span(instance, partitioning)
        started = time.perf_counter()
        result = defs.resolve_job_def("saliency_bench_clips").execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
        )
        wall = time.perf_counter() - started
    engine_seconds = _batch_metadata(result)["seconds"]
    return {
        "partitions": len(result.get_asset_materialization_events()),
        "run_wall_s": round(wall, 2),
        "engine_s": round(engine_seconds, 2),
        "bookkeeping_share": round((wall - engine_seconds) / wall, 3),
        "clips_per_s": round(clips / wall, 2),
        "vs_cli": round(cli_seconds / wall, 3),
    }


def _write_manifest(
    folder: Path, table: Path, partitioning: str, jobs: int, inference_size: str
) -> Path:
    options = {
        "partitioning": partitioning,
        "clips_per_run": 0,
        "shards": 4,
        "storage": str(folder / "storage"),
    }
    entry = {
        "id": "bench",
        "input": str(table),
        "output": str(folder / "out.jsonl"),
        "root": str(table.parent / "clips"),
        "jobs": jobs,
        "inference_size": "native" if inference_size == "native" else int(inference_size),
        "dagster": options,
    }
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


def _partition_span(instance: dg.DagsterInstance, partitioning: str) -> tuple[str, str]:
    if partitioning == "shards":
        return "shard-0", "shard-3"
    keys = instance.get_dynamic_partitions("saliency_bench_clips")
    return keys[0], keys[-1]


def _batch_metadata(result) -> dict:
    """The batch's figures, which the clip step reports on its status_contract check."""
    evaluation = result.get_asset_check_evaluations()[0]
    return {name: value.value for name, value in evaluation.metadata.items()}


def _report(figures: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dagster_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    registration = figures["registration"]
    if registration is not None:
        print(f"register {registration['keys']} partition keys: {registration['seconds']} s")
    cli = figures["cli"]
    print(f"CLI: {cli['clips']} clips in {cli['seconds']} s = {cli['clips_per_s']} clips/s")
    print(
        "| partitioning | partitions | run wall s | engine s | bookkeeping | clips/s "
        "| CLI time / run time |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for partitioning in figures["settings"]["partitionings"].split(","):
        run = figures[f"dagster_{partitioning}"]
        print(
            f"| {partitioning} | {run['partitions']} | {run['run_wall_s']} | {run['engine_s']} "
            f"| {run['bookkeeping_share']:.1%} | {run['clips_per_s']} | {run['vs_cli']} |"
        )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=150_000)
    parser.add_argument(
        "--width", type=int, default=320, help="clip width (a few px more per variant)"
    )
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--inference-size", default="native", help="native, or the short side N (e.g. 288)"
    )
    parser.add_argument("--partitionings", default="clips,shards", help="clips, shards or both")
    return parser.parse_args()


if __name__ == "__main__":
    main()
