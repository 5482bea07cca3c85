"""What the named-binary decoder pays for picking sampled frames by position.

``--ffmpeg-bin`` used to select the sampled frames inside ffmpeg (``select='eq(n,i)+...'``), which
picks other frames once ffmpeg rebuilds its filters on a resolution change. It now sends every
frame up to the last sampled one through the pipe and keeps the sampled ones. This times both
commands on one clip (spread sampling, 8 frames over the whole clip), reading the pipe to the end,
native (yuv420p) and at --inference-size 288, with the in-process decoder for scale.

    python benchmarks/pipe_sampling.py                 # 1080p, 250 frames
    python benchmarks/pipe_sampling.py --height 2160 --frames 120
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from common import ffmpeg_binary, machine_facts, print_table, write_json

from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.decode.conversion import inference_geometry
from saliency_assets.core.decode.decoding import decode_clip
from saliency_assets.core.decode.sampling import sample_indices

REPEATS = 3
FRAME_SAMPLES = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=250)
    options = parser.parse_args()
    width = options.height * 16 // 9
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder) / "clip.mp4", width, options.height, options.frames)
        rows = [measure(clip, width, options.height, options.frames, size) for size in (None, 288)]
    headers = ["mode", "select in ffmpeg s", "all frames piped s", "ratio", "in-process s"]
    print_table(headers, [[row[name] for name in headers] for row in rows])
    write_json(
        "pipe_sampling",
        {
            "machine": machine_facts(),
            "height": options.height,
            "frames": options.frames,
            "rows": rows,
        },
    )


def write_clip(path: Path, width: int, height: int, frames: int) -> Path:
    """A moving gradient, H.264 ultrafast: cheap to write, real to decode."""
    rows, cols = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            luma = ((cols + rows + index * 7) % 220 + 16).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(
                np.stack([luma] * 3, axis=-1), format="rgb24"
            ).reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def measure(clip: Path, width: int, height: int, frames: int, size: int | None) -> dict:
    plan = SamplingPlan(
        max_frames=frames, frame_samples=FRAME_SAMPLES, sampling="spread", inference_size=size
    )
    indices = sample_indices(plan, frames)
    out_w, out_h = (width, height) if size is None else inference_geometry(width, height, size)
    scale = [] if size is None else [f"scale=w={out_w}:h={out_h}:flags=area"]
    pix_fmt = "yuv420p" if size is None else "yuv444p"
    selected = "+".join(f"eq(n,{index})" for index in indices)
    old = pipe_command(clip, [f"select='{selected}'", *scale], len(indices), pix_fmt)
    new = pipe_command(clip, scale, indices[-1] + 1, pix_fmt)
    selecting = median_seconds(lambda: read_pipe(old))
    piping = median_seconds(lambda: read_pipe(new))
    in_process = median_seconds(lambda: decode_clip(ClipSource(clip), plan))
    return {
        "mode": "native" if size is None else f"inference {size}",
        "select in ffmpeg s": round(selecting, 3),
        "all frames piped s": round(piping, 3),
        "ratio": round(piping / selecting, 2),
        "in-process s": round(in_process, 3),
    }


def pipe_command(clip: Path, filters: list[str], frame_count: int, pix_fmt: str) -> list[str]:
    vf = ["-vf", ",".join(filters)] if filters else []
    return [
        ffmpeg_binary(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-threads",
        "1",
        "-filter_threads",
        "1",
        "-i",
        str(clip),
        "-map",
        "0:v:0",
        *vf,
        "-frames:v",
        str(frame_count),
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "pipe:1",
    ]


def read_pipe(command: list[str]) -> int:
    """Run the command and read its whole output in 1 MiB pieces, as the decoder drains it."""
    total = 0
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        while chunk := process.stdout.read(1 << 20):
            total += len(chunk)
    return total


def median_seconds(action) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    main()
