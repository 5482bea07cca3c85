"""The baseline: the reference tool's per-clip pipeline, one clip at a time.

Per clip, exactly the reference's shape (REFERENCE.md sections 5.3-10), through the verified
re-implementation in ``tests/support/reference_pipeline.py``:

1. a probe process for the geometry. The reference ran ``ffprobe -v error -select_streams v:0
   -show_entries stream=width,height -of json SRC``; no ffprobe binary exists here, so the
   equivalent ``ffmpeg -hide_banner -i SRC`` runs instead and its stream line is parsed (the
   same kind of process: one exec, header parse, exit). Raw ``.yuv`` takes the row's geometry,
   as in the reference (ffprobe cannot read it);
2. an ffmpeg process writing the first ``max_frames`` frames to a temporary raw yuv420p file;
3. numpy BT.709 conversion at full resolution, zero padding to 32;
4. a new onnxruntime session per clip with default options (all cores);
5. mean reducer, spatial mean and variance.

The reference's height % 8 guard is switched off so 540p is computed rather than rejected
(weakness W6), which only makes the baseline do more work.

    python benchmarks/baseline.py --clips clips.json --model M --output result.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.reference_pipeline import reference_compute_clip  # noqa: E402

STREAM_GEOMETRY = re.compile(r"Stream #\S+.*?Video: .*?(\d{2,5})x(\d{2,5})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", required=True, help="JSON list of corpus clip entries")
    parser.add_argument("--model", required=True)
    parser.add_argument("--ffmpeg", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--frame-samples", type=int, default=8)
    args = parser.parse_args(argv)
    clips = json.loads(Path(args.clips).read_text())
    results = [run_clip(clip, args) for clip in clips]
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if all(result["status"] == "ok" for result in results) else 1


def run_clip(clip: dict, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    if clip["codec"] == "yuv":
        width, height = clip["width"], clip["height"]
    else:
        width, height = probe_geometry(args.ffmpeg, clip["path"])
    result = reference_compute_clip(
        args.ffmpeg,
        clip["path"],
        width,
        height,
        args.model,
        max_frames=args.max_frames,
        frame_samples=args.frame_samples,
        enforce_height_multiple_of_8=False,
    )
    return {
        "name": clip["name"],
        "status": result.status,
        "mean": result.mean,
        "var": result.var,
        "error": result.error,
        "seconds": time.perf_counter() - started,
    }


def probe_geometry(ffmpeg: str, src: str) -> tuple[int, int]:
    """The first video stream's width and height from ``ffmpeg -hide_banner -i SRC``."""
    probe = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", src], capture_output=True, text=True, check=False
    )
    match = STREAM_GEOMETRY.search(probe.stderr)
    if match is None:
        return 0, 0
    return int(match.group(1)), int(match.group(2))


if __name__ == "__main__":
    sys.exit(main())
