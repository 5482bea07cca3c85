"""The floor: the work no implementation can skip, timed with nothing else around it.

Per clip and mode, two numbers, each on one core (the product runs one process per core, one
thread each):

- ``decode_s``: PyAV decoding the same sampled frames (the first ``max_frames``, one decoder
  thread) to planes, and nothing else: ``to_ndarray()`` of the yuv420p frame in native mode;
  in inference-size mode swscale's area scaling to the inference geometry as rgb24. Raw
  ``.yuv`` is read from the file (and scaled in inference-size mode).
- ``infer_s``: the same model calls the product makes for those frames (the same engine,
  ``--providers`` as the product's, and session options; the same tile windows at full
  resolution, one call per frame at the inference size) on tensors built before the clock
  starts.

``floor_s = sum over clips of (decode_s + infer_s) / cores``, with ``cores`` the worker
processes the product runs (``--jobs``). It leaves out everything else the product does
(colour conversion, normalisation, stitching, reduction, process start-up, IPC, table I/O),
so ``floor_s / product_s`` is the share of the product's time spent on unavoidable work.

    python benchmarks/floor.py --clips clips.json --model M --mode native --output floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import numpy as np

from saliency_assets.core.decode.conversion import inference_geometry
from saliency_assets.core.model.preprocessing import PAD_MULTIPLE
from saliency_assets.core.model.saliency_model import SaliencyModel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", required=True, help="JSON list of corpus clip entries")
    parser.add_argument("--model", required=True)
    parser.add_argument("--mode", required=True, help="'native' or an inference size")
    parser.add_argument("--output", required=True)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--providers", default="auto", help="the product's --providers")
    args = parser.parse_args(argv)
    size = None if args.mode == "native" else int(args.mode)
    model = SaliencyModel(Path(args.model), tuple(args.providers.split(",")))
    clips = json.loads(Path(args.clips).read_text())
    results = [floor_clip(clip, model, size, args.max_frames) for clip in clips]
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def floor_clip(clip: dict, model: SaliencyModel, size: int | None, max_frames: int) -> dict:
    started = time.perf_counter()
    frames = (
        decode_raw(clip, size, max_frames)
        if clip["codec"] == "yuv"
        else decode(clip, size, max_frames)
    )
    decode_s = time.perf_counter() - started
    height, width = frames[0].shape[:2]
    return {
        "name": clip["name"],
        "frames": len(frames),
        "decode_s": decode_s,
        "infer_s": infer(model, height, width, len(frames)),
    }


def decode(clip: dict, size: int | None, max_frames: int) -> list[np.ndarray]:
    with av.open(clip["path"]) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = []
        for frame in container.decode(stream):
            frames.append(_planes(frame, size))
            if len(frames) == max_frames:
                break
    return frames


def decode_raw(clip: dict, size: int | None, max_frames: int) -> list[np.ndarray]:
    width, height = clip["width"], clip["height"]
    frame_bytes = width * height * 3 // 2
    frames = []
    with open(clip["path"], "rb") as handle:
        for _ in range(max_frames):
            data = handle.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            planes = np.frombuffer(data, np.uint8).reshape(height * 3 // 2, width)
            if size is None:
                frames.append(planes[:height])
            else:
                frames.append(_planes(av.VideoFrame.from_ndarray(planes, format="yuv420p"), size))
    return frames


def infer(model: SaliencyModel, height: int, width: int, frames: int) -> float:
    """Seconds for the product's onnxruntime calls on ``frames`` frames of this geometry."""
    padded_height, padded_width = (-(-n // PAD_MULTIPLE) * PAD_MULTIPLE for n in (height, width))
    tiles = model.tiles_for(padded_height, padded_width)
    shapes = (
        [(tile.bottom - tile.top, tile.right - tile.left) for tile in tiles]
        if tiles
        else [(padded_height, padded_width)]
    )
    rng = np.random.default_rng(0)
    tensors = [rng.standard_normal((1, 3, *shape), dtype=np.float32) for shape in shapes]
    started = time.perf_counter()
    for _ in range(frames):
        for tensor in tensors:
            model.run_window(tensor)
    return time.perf_counter() - started


def _planes(frame: av.VideoFrame, size: int | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="yuv420p")[: frame.height]
    width, height = inference_geometry(frame.width, frame.height, size)
    return frame.reformat(width, height, format="rgb24", interpolation="AREA").to_ndarray()


if __name__ == "__main__":
    sys.exit(main())
