"""The load test through Dagster: 150,000 per-frame rows over 2,000 and 20,000 tiny clips.

Same corpus and table as ``load.py`` (the CLI run), materialised as ``source_table`` ->
``clip_saliency`` (all partitions, one ranged run) -> ``enriched_table`` on a temporary SQLite
instance, in a child process whose whole tree is measured. The table is partitioned by 64 hash
shards: at 20,000 clips per-clip partitions would spend ~38 ms each on Dagster bookkeeping
(see dagster_overhead.py), which measures Dagster rather than the product.

    .venv/bin/python benchmarks/load_dagster.py [--rows 150000] [--clips 2000,20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, RESULTS_DIR, run_measured  # noqa: E402
from load import read_output, write_sources, write_table  # noqa: E402

SHARDS = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--clips", default="2000,20000")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return materialize_in_dagster(args.child)
    workdir = RESULTS_DIR / "load_dagster"
    sources = write_sources(workdir / "sources")
    runs = [run_load(workdir, sources, args.rows, int(clips)) for clips in args.clips.split(",")]
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "load_dagster-latest.json").write_text(json.dumps(runs, indent=1) + "\n")
    print("| rows | clips | rows kept | ok rows | seconds | peak tree RSS MB | peak tree PSS MB |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for run in runs:
        print(
            f"| {run['rows']} | {run['clips']} | {run['rows_kept']} | {run['ok']} "
            f"| {run['seconds']:.1f} | {run['peak_rss_mb']:.0f} | {run['peak_pss_mb']:.0f} |"
        )
    return 0 if all(run["rows_kept"] and run["ok"] == run["rows"] for run in runs) else 1


def run_load(workdir: Path, sources: list[Path], rows: int, clips: int) -> dict:
    folder = workdir / f"{rows}-rows-{clips}-clips"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "clips").mkdir(parents=True)
    names = [f"clip{number:06d}.mp4" for number in range(clips)]
    for number, name in enumerate(names):
        os.link(sources[number % len(sources)], folder / "clips" / name)
    expected = write_table(folder / "features.jsonl", names, rows)
    entry = {
        "id": "load",
        "input": "features.jsonl",
        "output": "features.saliency.jsonl",
        "root": "clips",
        "max_frames": 2,
        "dagster": {
            "partitioning": "shards",
            "shards": SHARDS,
            "clips_per_run": 0,
            "storage": "storage",
        },
    }
    (folder / "manifest.json").write_text(json.dumps({"tables": [entry]}))
    print(f"   {rows} rows over {clips} clips through Dagster ...", flush=True)
    measured = run_measured([PYTHON, __file__, "--child", str(folder)])
    if measured.returncode != 0:
        raise SystemExit(f"{clips} clips failed:\n{measured.stderr[-3000:]}")
    written, ok = read_output(folder / "features.saliency.jsonl")
    shutil.rmtree(folder)
    return {
        "rows": rows,
        "clips": clips,
        "ok": ok,
        "rows_kept": written == expected,
        "seconds": measured.seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_pss_mb": measured.peak_pss_mb,
    }


def materialize_in_dagster(folder: Path) -> int:
    import dagster as dg

    os.environ["SALIENCY_ASSETS_MANIFESTS"] = str(folder / "manifest.json")
    from saliency_assets.definitions import build_definitions

    defs = build_definitions()
    last = f"shard-{SHARDS - 1:02d}"
    home = folder / "home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for job, tags in (
            ("saliency_load_refresh", {}),
            (
                "saliency_load_clips",
                {
                    "dagster/asset_partition_range_start": "shard-00",
                    "dagster/asset_partition_range_end": last,
                },
            ),
            ("saliency_load_enrich", {}),
        ):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags)
            if not result.success:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
