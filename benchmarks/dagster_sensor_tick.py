"""The clip sensor's tick on a large table: the first (indexing) tick and an unchanged-table tick.

``--clips`` uniquely named clips (hard links to one real encode) and a one-row-per-clip table;
the sensor of the table's own definitions is evaluated twice on a scratch SQLite instance,
the second time with the first tick's cursor, as the daemon would.

    python benchmarks/dagster_sensor_tick.py --clips 150000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import dagster as dg

from saliency_assets.demo import DemoClip, write_demo_clip

RESULTS = Path(__file__).resolve().parent / "results"
LINKS_PER_FILE = 60_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=150_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sensor-tick-") as scratch:
        work = Path(scratch)
        os.environ["SALIENCY_ASSETS_MANIFESTS"] = str(_corpus(work, args.clips))
        from saliency_assets.definitions import build_definitions

        sensor = build_definitions().resolve_sensor_def("saliency_bench_clip_sensor")
        (work / "home").mkdir()
        with dg.instance_for_test(temp_dir=str(work / "home")) as instance:
            first, first_s = _tick(sensor, instance, None)
            second, second_s = _tick(sensor, instance, first.cursor)
    figures = {
        "clips": args.clips,
        "first_tick_s": round(first_s, 3),
        "first_tick_added": sum(len(r.partition_keys) for r in first.dynamic_partitions_requests),
        "unchanged_tick_s": round(second_s, 3),
        "unchanged_tick_requests": len(second.run_requests or []),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dagster_sensor_tick.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def _tick(sensor, instance, cursor):
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        started = time.perf_counter()
        result = sensor(context)
        return result, time.perf_counter() - started


def _corpus(work: Path, clips: int) -> Path:
    folder = work / "clips"
    folder.mkdir(parents=True)
    source = work / "one.mp4"
    write_demo_clip(source, DemoClip("one.mp4", 32, 32, "libx264"))
    rows = []
    for index in range(clips):
        name = f"clip_{index:06d}.mp4"
        if index % LINKS_PER_FILE == 0 and index:  # a file has at most ~65,000 links
            source = _copy(source, work / f"copy_{index}.mp4")
        os.link(source, folder / name)
        rows.append(json.dumps({"src": name}) + "\n")
    table = work / "features.jsonl"
    table.write_text("".join(rows))
    entry = {"id": "bench", "input": str(table), "output": str(work / "out.jsonl")}
    entry.update({"root": str(folder), "dagster": {"storage": str(work / "storage")}})
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


def _copy(source: Path, target: Path) -> Path:
    target.write_bytes(source.read_bytes())
    return target


if __name__ == "__main__":
    main()
