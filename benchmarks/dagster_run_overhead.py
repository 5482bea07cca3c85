"""Per-run overhead of a single-clip run, as a launched run pays it.

Runs ``dagster job execute`` (the job's own executor, as the daemon's run worker would) for one
clip partition ``--runs`` times on a scratch SQLite instance and reads each run's wall time from
the instance (RUN_START to RUN_SUCCESS; the CLI's own start-up is not counted). The clip is
already in the results store after the first run, so the later runs are overhead only: step
launch, resources, index lookup, events.

    python benchmarks/dagster_run_overhead.py --runs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg

from saliency_assets.demo import DemoClip, write_demo_clip

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="run-overhead-") as scratch:
        seconds = measure(Path(scratch), args.runs)
    figures = {
        "runs": args.runs,
        "first_run_s": round(seconds[0], 3),
        "later_runs_s": [round(value, 3) for value in seconds[1:]],
        "median_overhead_s": round(statistics.median(seconds[1:]), 3),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dagster_run_overhead.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def measure(folder: Path, runs: int) -> list[float]:
    home = folder / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    manifest = _corpus(folder)
    env = {**os.environ, "DAGSTER_HOME": str(home), "SALIENCY_ASSETS_MANIFESTS": str(manifest)}
    dagster = [sys.executable, "-m", "dagster"]
    module = ["-m", "saliency_assets.definitions"]
    select = ["--select", "saliency/bench/source_table"]
    subprocess.run([*dagster, "asset", "materialize", *module, *select], env=env, check=True)
    tags = json.dumps({"dagster/partition": "clip.mp4"})
    for _ in range(runs):
        job = ["job", "execute", *module, "-j", "saliency_bench_clips", "--tags", tags]
        subprocess.run([*dagster, *job], env=env, check=True, capture_output=True)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        clip_runs = instance.get_runs(filters=dg.RunsFilter(job_name="saliency_bench_clips"))
        stats = [instance.get_run_stats(run.run_id) for run in reversed(clip_runs)]
    return [stat.end_time - stat.start_time for stat in stats]


def _corpus(folder: Path) -> Path:
    clips = folder / "clips"
    clips.mkdir()
    write_demo_clip(clips / "clip.mp4", DemoClip("clip.mp4", 96, 64, "libx264"))
    table = folder / "features.jsonl"
    table.write_text(json.dumps({"src": "clip.mp4", "frame": 0}) + "\n")
    entry = {"id": "bench", "input": str(table), "output": str(folder / "out.jsonl")}
    entry.update({"root": str(clips), "max_frames": 4})
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


if __name__ == "__main__":
    main()
