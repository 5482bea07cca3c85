"""Load: a 150,000-row per-frame feature table over 20,000 tiny unique clips, through the CLI.

The table has several rows per clip (one per frame, as per-frame feature tables do) and a few
feature columns. The clips are hard links of four tiny generated H.264 files under distinct
names: every name is its own clip, so each is decoded and scored. The same number of rows is run
over 2,000 and over 20,000 clips, so the table is the same size and only the number of clips
differs: the parent's memory must not grow with the clips beyond the table, and the workers'
memory must stay flat. Each run uses a fresh results store, as a first run would.

    python benchmarks/load.py                                  # 150000 rows; 2000, 20000 clips
    python benchmarks/load.py --rows 3000 --clips 400 --workdir /tmp/load --json /tmp/load.json

Prints wall time, rows/s, clips/s and peak memory (MB) per run and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, RESULTS_DIR, machine_facts, print_table, run_measured  # noqa: E402

SOURCES = 4
TINY = (64, 48)
FRAMES = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--clips", default="2000,20000", help="comma-separated clip counts")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--workdir", type=Path, default=RESULTS_DIR / "load")
    parser.add_argument("--json", type=Path, default=None, help="default: results/load-*.json")
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.clips.split(",")]
    sources = write_sources(args.workdir / "sources")
    runs = [run_load(args.workdir, sources, args.rows, count, args.jobs) for count in counts]
    report(runs)
    payload = {"command": " ".join(sys.argv), "machine": machine_facts(), "runs": runs}
    if len(runs) > 1:
        payload["parent_growth_mb_per_1000_clips"] = parent_growth(runs)
    path = args.json or RESULTS_DIR / "load-latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"\nwrote {path}")
    return 0 if all(run["rows_kept"] and run["ok"] == run["rows"] for run in runs) else 1


def write_sources(folder: Path) -> list[Path]:
    """SOURCES tiny H.264 clips with different moving content."""
    folder.mkdir(parents=True, exist_ok=True)
    return [_encode(folder / f"source{index}.mp4", index) for index in range(SOURCES)]


def run_load(workdir: Path, sources: list[Path], rows: int, clips: int, jobs: int) -> dict:
    """One materialize run of ``rows`` rows over ``clips`` clips; its figures."""
    folder = workdir / f"{rows}-rows-{clips}-clips"
    shutil.rmtree(folder, ignore_errors=True)
    clip_dir = folder / "clips"
    clip_dir.mkdir(parents=True)
    names = [f"clip{number:06d}.mp4" for number in range(clips)]
    for number, name in enumerate(names):
        os.link(sources[number % len(sources)], clip_dir / name)
    table, output = folder / "features.jsonl", folder / "features.saliency.jsonl"
    expected = write_table(table, names, rows)
    command = [
        PYTHON, "-m", "saliency_assets.cli", "materialize", "--input", str(table),
        "--output", str(output), "--root", str(clip_dir), "--jobs", str(jobs),
        "--max-frames", "2", "--results-store", str(folder / "store"),
    ]  # fmt: skip
    print(f"   {rows} rows over {clips} clips ...", flush=True)
    measured = run_measured(command)
    if measured.returncode != 0:
        raise SystemExit(f"{clips} clips failed:\n{measured.stderr[-3000:]}")
    written, ok = read_output(output)
    run = {
        "rows": rows,
        "clips": clips,
        "ok": ok,
        "rows_kept": written == expected,
        "table_mb": table.stat().st_size / 1e6,
        "seconds": measured.seconds,
        "rows_per_s": rows / measured.seconds,
        "clips_per_s": clips / measured.seconds,
        "peak_tree_rss_mb": measured.peak_rss_mb,
        "peak_tree_pss_mb": measured.peak_pss_mb,
        "peak_parent_rss_mb": getattr(measured, "peak_root_rss_mb", None),
        "peak_workers_rss_mb": getattr(measured, "peak_descendants_rss_mb", None),
    }
    shutil.rmtree(folder)
    return run


def write_table(path: Path, names: list[str], rows: int) -> list[tuple[str, int]]:
    """Per-frame rows: consecutive blocks of rows per clip, frames numbered within each clip.
    Returns the (src, frame) of every row, in order."""
    keys, frame, previous = [], 0, None
    with path.open("w") as handle:
        for index in range(rows):
            name = names[index * len(names) // rows]
            frame = frame + 1 if name == previous else 0
            previous = name
            row = {
                "src": name,
                "frame": frame,
                "vmaf": round(60 + (index * 7919 % 4000) / 100, 2),
                "psnr_y": round(30 + (index * 104729 % 1500) / 100, 2),
                "encoder": "x264-crf23" if index % 2 else "x265-crf28",
            }
            handle.write(json.dumps(row) + "\n")
            keys.append((name, frame))
    return keys


def read_output(path: Path) -> tuple[list[tuple[str, int]], int]:
    """The (src, frame) of every written row, in order, and how many rows are ``ok``."""
    keys, ok = [], 0
    with path.open() as handle:
        for line in handle:
            row = json.loads(line)
            keys.append((row["src"], row["frame"]))
            ok += row["saliency_status"] == "ok"
    return keys, ok


def parent_growth(runs: list[dict]) -> float | None:
    """How much the parent's peak RSS grew per 1,000 extra clips between the first and the
    last run (same rows)."""
    first, last = runs[0], runs[-1]
    if first["peak_parent_rss_mb"] is None or last["clips"] == first["clips"]:
        return None
    grown = last["peak_parent_rss_mb"] - first["peak_parent_rss_mb"]
    return 1000 * grown / (last["clips"] - first["clips"])


def report(runs: list[dict]) -> None:
    print("\nwall time and peak memory (MB; workers = every process but the parent)")
    print_table(
        ["rows", "clips", "ok", "seconds", "rows/s", "clips/s", "tree RSS", "tree PSS",
         "parent RSS", "workers RSS", "table MB"],
        [
            [run["rows"], run["clips"], run["ok"], run["seconds"], run["rows_per_s"],
             run["clips_per_s"], run["peak_tree_rss_mb"], run["peak_tree_pss_mb"],
             run["peak_parent_rss_mb"], run["peak_workers_rss_mb"], run["table_mb"]]
            for run in runs
        ],
    )  # fmt: skip


def _encode(path: Path, seed: int) -> Path:
    """FRAMES frames of a moving gradient and square, H.264, TINY pixels."""
    width, height = TINY
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18"}
        stream.time_base = Fraction(1, 25)
        rows, cols = np.mgrid[0:height, 0:width]
        for index in range(FRAMES):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = (cols * 4 + index * 9 + seed * 40) % 256
            rgb[..., 1] = (rows * 5 + seed * 60) % 256
            top, left = (
                (index * 3 + seed * 5) % (height - 12),
                (index * 4 + seed * 7) % (width - 12),
            )
            rgb[top : top + 12, left : left + 12] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


if __name__ == "__main__":
    sys.exit(main())
