"""Scaling: the same command over 100, 1,000 and 10,000 tiny clips.

Each size is one ``saliency-assets materialize`` run (compatible mode, saliency_student_v1,
two workers, no results store) over a table of that many distinct 64x48 H.264 clips (pans over
the photographs of ``corpus.py``, ten frames each). Prints time, clips/s and peak memory per
size: time should grow linearly (constant clips/s) and the workers' memory should stay flat;
only the parent, which holds the table's rows, may grow with the table.

    python benchmarks/scaling.py                  # 100, 1000, 10000
    python benchmarks/scaling.py --sizes 100,1000
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    RESULTS_DIR,
    machine_facts,
    print_table,
    run_measured,
    shared_model,
    write_json,
)
from corpus import CorpusClip, plan_clip, write_clip  # noqa: E402

CLIP_DIR = RESULTS_DIR / "scaling"
TINY = (64, 48)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--model", default="saliency_student_v1")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    model = Path(args.model) if args.model.endswith(".onnx") else shared_model(args.model)
    clips = ensure_clips(max(sizes))
    facts = machine_facts()
    runs = [run_size(size, clips[:size], model, args.jobs) for size in sizes]
    report(runs)
    payload = {"command": " ".join(sys.argv), "model": str(model), "machine": facts}
    print(f"\nwrote {write_json('scaling', {**payload, 'runs': runs})}")
    return 0


def ensure_clips(count: int) -> list[str]:
    """Paths of ``count`` distinct tiny clips, written (in two processes) where missing."""
    planned = [_tiny_clip(number) for number in range(count)]
    missing = [clip for clip in planned if not Path(clip.path).is_file()]
    if missing:
        print(f"writing {len(missing)} tiny clips to {CLIP_DIR}", flush=True)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(write_clip, missing, chunksize=64))
    return [clip.path for clip in planned]


def run_size(size: int, paths: list[str], model: Path, jobs: int) -> dict:
    table = CLIP_DIR / f"table-{size}.jsonl"
    table.write_text("".join(json.dumps({"src": path}) + "\n" for path in paths))
    output = CLIP_DIR / f"out-{size}.jsonl"
    command = [
        PYTHON, "-m", "saliency_assets.cli", "materialize", "--input", str(table), "--output",
        str(output), "--model-path", str(model), "--jobs", str(jobs), "--max-frames", "8",
        "--frame-samples", "8", "--results-store", "none",
    ]  # fmt: skip
    measured = run_measured(command)
    if measured.returncode != 0:
        raise SystemExit(f"{size} clips failed:\n{measured.stderr[-3000:]}")
    ok = sum(json.loads(line)["saliency_status"] == "ok" for line in output.open())
    print(f"   {size} clips: {measured.seconds:.1f} s", flush=True)
    return {
        "clips": size,
        "ok": ok,
        "table_bytes": table.stat().st_size,
        "seconds": measured.seconds,
        "clips_per_s": size / measured.seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_pss_mb": measured.peak_pss_mb,
        "peak_parent_rss_mb": measured.peak_root_rss_mb,
        "peak_workers_rss_mb": measured.peak_descendants_rss_mb,
    }


def report(runs: list[dict]) -> None:
    first = runs[0]
    print("\ntime and peak memory (MB; workers = every process but the parent)")
    print_table(
        [
            "clips",
            "ok",
            "seconds",
            "clips/s",
            "time / linear",
            "tree RSS",
            "tree PSS",
            "parent RSS",
            "workers RSS",
            "table MB",
        ],  # fmt: skip
        [
            [
                run["clips"],
                run["ok"],
                run["seconds"],
                run["clips_per_s"],
                run["seconds"] / (first["seconds"] * run["clips"] / first["clips"]),
                run["peak_rss_mb"],
                run["peak_pss_mb"],
                run["peak_parent_rss_mb"],
                run["peak_workers_rss_mb"],
                run["table_bytes"] / 1e6,
            ]  # fmt: skip
            for run in runs
        ],
    )


def _tiny_clip(number: int) -> CorpusClip:
    planned = plan_clip(CLIP_DIR, "540p-h264", number, 10)
    width, height = TINY
    name = f"tiny-{number:05d}"
    return CorpusClip(
        **{
            **vars(planned),
            "name": name,
            "kind": "tiny-h264",
            "path": str(CLIP_DIR / "clips" / f"{name}.mp4"),
            "width": width,
            "height": height,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
