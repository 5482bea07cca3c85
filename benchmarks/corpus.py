"""Deterministic benchmark corpus: camera pans and zooms over real photographs.

The photographs are the ones scikit-image ships inside its wheel (``skimage.data``: astronaut,
coffee, chelsea, rocket, ...), so nothing is downloaded. Each clip is a slow pan plus a zoom
over one photograph, rendered with a bicubic affine warp and a little seeded sensor noise,
then encoded with PyAV (libx264 / libx265 with fixed settings) or written as raw yuv420p.

    python benchmarks/corpus.py                      # the default corpus (a few minutes of runs)
    python benchmarks/corpus.py --scale 4            # four times as many clips of every kind
    python benchmarks/corpus.py --kinds 1080p-h264 --clips 10

Writes ``<out>/<kind>/<name>.{mp4,yuv}`` and ``<out>/manifest.json`` (one entry per clip with
its geometry, codec, photograph, motion and sha256) and prints a table. Clips already present
with the recorded sha256 are kept, so rerunning is cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUT = RESULTS_DIR / "corpus"
RATE = 25
RESOLUTIONS = {"540p": (960, 540), "1080p": (1920, 1080), "2160p": (3840, 2160)}
# kind -> default clip count; --scale multiplies them. A user's run covers thousands of clips
# and pays the command's start-up (about 1 s) once; 12 clips at 1080p and 8 at 2160p keep that
# one-off cost from dominating the --inference-size ratios, as it did with 6 and 2.
DEFAULT_KINDS = {
    "540p-h264": 3,
    "540p-hevc": 3,
    "1080p-h264": 4,
    "1080p-hevc": 4,
    "1080p-yuv": 4,
    "2160p-h264": 4,
    "2160p-hevc": 4,
}
PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")
ENCODERS = {
    "h264": ("libx264", {"preset": "veryfast", "crf": "18", "threads": "2"}),
    "hevc": (
        "libx265",
        {"preset": "ultrafast", "crf": "20", "x265-params": "log-level=error:pools=2"},
    ),
}


@dataclass(frozen=True)
class CorpusClip:
    name: str
    kind: str
    path: str
    width: int
    height: int
    codec: str
    frames: int
    photograph: str
    pan: tuple[float, float]
    zoom_per_frame: float
    sha256: str = ""

    @property
    def is_raw(self) -> bool:
        return self.codec == "yuv"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = parse_kinds(args.kinds, args.clips, args.scale)
    started = time.perf_counter()
    clips = build_corpus(Path(args.out), kinds, args.frames)
    print_table(clips, time.perf_counter() - started)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="corpus folder")
    parser.add_argument(
        "--kinds", default=",".join(DEFAULT_KINDS), help="comma-separated kinds (RES-CODEC)"
    )
    parser.add_argument("--clips", type=int, default=None, help="clips per kind (all kinds)")
    parser.add_argument("--scale", type=int, default=1, help="multiply every default count")
    parser.add_argument("--frames", type=int, default=10, help="frames per clip (>= 8)")
    return parser.parse_args(argv)


def parse_kinds(text: str, clips: int | None, scale: int) -> dict[str, int]:
    kinds = {}
    for kind in (part.strip() for part in text.split(",") if part.strip()):
        resolution, _, codec = kind.partition("-")
        if resolution not in RESOLUTIONS or codec not in (*ENCODERS, "yuv"):
            raise SystemExit(f"unknown kind {kind!r}: use RES-CODEC, e.g. 1080p-h264")
        kinds[kind] = (clips if clips is not None else DEFAULT_KINDS.get(kind, 1)) * scale
    return kinds


def build_corpus(out: Path, kinds: dict[str, int], frames: int) -> list[CorpusClip]:
    """Write every clip of ``kinds`` under ``out`` (reusing intact ones); return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    known = _load_manifest(manifest_path)
    clips = []
    for kind, count in kinds.items():
        for number in range(count):
            clip = plan_clip(out, kind, number, frames)
            previous = known.get(clip.name)
            if previous and previous.sha256 and _intact(previous):
                clips.append(previous)
                continue
            write_clip(clip)
            clips.append(CorpusClip(**{**asdict(clip), "sha256": sha256_file(Path(clip.path))}))
    merged = {**known, **{clip.name: clip for clip in clips}}
    manifest_path.write_text(
        json.dumps([asdict(clip) for clip in merged.values()], indent=1) + "\n"
    )
    return clips


def load_corpus(out: Path = DEFAULT_OUT, kinds: list[str] | None = None) -> list[CorpusClip]:
    """The manifest's clips (optionally only some kinds), in manifest order."""
    clips = list(_load_manifest(Path(out) / "manifest.json").values())
    if not clips:
        raise SystemExit(f"no corpus in {out}: run python benchmarks/corpus.py first")
    return [clip for clip in clips if kinds is None or clip.kind in kinds]


def plan_clip(out: Path, kind: str, number: int, frames: int) -> CorpusClip:
    """The clip's deterministic parameters: photograph, pan direction and zoom from its index."""
    resolution, _, codec = kind.partition("-")
    width, height = RESOLUTIONS[resolution]
    seed = _seed(kind, number)
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.002, 0.006)  # fraction of the photograph per frame
    suffix = "yuv" if codec == "yuv" else "mp4"
    name = f"{kind}-{number:04d}"
    return CorpusClip(
        name=name,
        kind=kind,
        path=str(out / kind / f"{name}.{suffix}"),
        width=width,
        height=height,
        codec=codec,
        frames=max(8, frames),
        photograph=PHOTOGRAPHS[seed % len(PHOTOGRAPHS)],
        pan=(round(float(np.cos(angle) * speed), 6), round(float(np.sin(angle) * speed), 6)),
        zoom_per_frame=round(float(rng.uniform(-0.01, 0.015)), 6),
    )


def write_clip(clip: CorpusClip) -> None:
    path = Path(clip.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    photograph = load_photograph(clip.photograph)
    frames = (render_frame(photograph, clip, index) for index in range(clip.frames))
    if clip.is_raw:
        with path.open("wb") as handle:
            for rgb in frames:
                handle.write(_yuv420p(rgb).tobytes())
        return
    encoder, options = ENCODERS[clip.codec]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        stream.options = dict(options)
        stream.time_base = Fraction(1, RATE)
        stream.codec_context.colorspace = 1  # BT.709, tagged as real HD content is
        stream.codec_context.color_range = 1
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
            )
            frame.pts, frame.time_base = index, Fraction(1, RATE)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def load_photograph(name: str) -> Image.Image:
    import skimage.data  # bundled in the wheel: no download

    return Image.fromarray(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))


def render_frame(photograph: Image.Image, clip: CorpusClip, index: int) -> np.ndarray:
    """Frame ``index``: the view pans by ``clip.pan`` and zooms by ``zoom_per_frame`` a frame."""
    src_w, src_h = photograph.size
    # The view covers 70 % of the photograph's short side (in the clip's aspect), zooming in time.
    view_h = 0.7 * min(src_h, src_w * clip.height / clip.width) * (1 - clip.zoom_per_frame) ** index
    view_w = view_h * clip.width / clip.height
    centre_x = src_w / 2 + clip.pan[0] * src_w * (index - clip.frames / 2)
    centre_y = src_h / 2 + clip.pan[1] * src_h * (index - clip.frames / 2)
    scale = view_w / clip.width
    # PIL's affine maps output (x, y) to input (a*x + b*y + c, d*x + e*y + f).
    coefficients = (scale, 0, centre_x - view_w / 2, 0, scale, centre_y - view_h / 2)
    warped = photograph.transform(
        (clip.width, clip.height), Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC
    )
    rgb = np.asarray(warped, dtype=np.int16)
    # Sensor-like grain keeps the bitrate, and so the decoding work, near real footage.
    grain = np.random.default_rng(_seed(clip.kind, index)).normal(0.0, 4.0, rgb.shape[:2])
    return np.clip(rgb + grain.astype(np.int16)[..., None], 0, 255).astype(np.uint8)


def print_table(clips: list[CorpusClip], seconds: float) -> None:
    print(f"{'kind':<12} {'clips':>5} {'geometry':>10} {'frames':>6} {'MB':>8}")
    for kind in dict.fromkeys(clip.kind for clip in clips):
        group = [clip for clip in clips if clip.kind == kind]
        size = sum(os.path.getsize(clip.path) for clip in group) / 1e6
        geometry = f"{group[0].width}x{group[0].height}"
        print(f"{kind:<12} {len(group):>5} {geometry:>10} {group[0].frames:>6} {size:>8.1f}")
    print(f"{len(clips)} clips ready in {seconds:.1f} s")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(
        format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
    ).to_ndarray()


def _seed(kind: str, number: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{kind}/{number}".encode()).digest()[:4], "little")


def _intact(clip: CorpusClip) -> bool:
    path = Path(clip.path)
    return path.is_file() and sha256_file(path) == clip.sha256


def _load_manifest(path: Path) -> dict[str, CorpusClip]:
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text())
    return {entry["name"]: CorpusClip(**{**entry, "pan": tuple(entry["pan"])}) for entry in entries}


if __name__ == "__main__":
    sys.exit(main())
