"""The cost of the results store's source fingerprint (SHA-256 of every byte) beside a clip's
compute: a 540p H.264 clip and a 4K raw .yuv, both at --inference-size 288 (the cheapest
compute, so the largest ratio) and the 4K raw at native size too, in paired rounds whose order
rotates.

Each round, for each clip: the fingerprint with the file in the page cache (warm: a run that
has just read or written it), the fingerprint after evicting the file from the page cache
(cold: ``posix_fadvise(DONTNEED)``, no root needed), then the clip's compute in process
(decode + inference through ``compute_clip``, one model session, as a worker does). Also
times the candidate hashes and reading strategies on the 4K file, so the choice (SHA-256,
``readinto`` a 1 MiB buffer) can be checked here.

    python benchmarks/fingerprint.py            # --rounds 5 --frames 240 --raw-frames 30
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import mmap
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, shared_model  # noqa: E402

from saliency_assets.core.clip_saliency import ClipJob, compute_clip  # noqa: E402
from saliency_assets.core.clips import ClipSource  # noqa: E402
from saliency_assets.core.config import MaterializeConfig  # noqa: E402
from saliency_assets.core.model import SaliencyModel  # noqa: E402
from saliency_assets.core.results_store import source_fingerprint  # noqa: E402

HASHES = ("sha256", "blake2b", "sha1", "md5")


def main() -> None:
    options = parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="fingerprint-bench-") as folder:
        small = ClipSource(write_540p(Path(folder) / "clip_540p.mp4", options.frames))
        raw_path = write_raw_4k(Path(folder) / "clip_3840x2160.yuv", options.raw_frames)
        raw = ClipSource(raw_path, 3840, 2160, "yuv420p")
        at_288 = ClipJob.from_config(MaterializeConfig(inference_size=288), shared_model())
        native = ClipJob.from_config(MaterializeConfig(), shared_model())
        clips = {
            "540p h264 @288": (small, at_288),
            "2160p raw @288": (raw, at_288),
            "2160p raw native": (raw, native),
        }
        model = SaliencyModel(at_288.model_path, at_288.providers)
        rounds = measure_rounds(clips, model, options.rounds)
        hashes = measure_hashes(raw_path)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    report(clips_summary(rounds), hashes, load_before, load_after, options)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=240, help="540p clip length (25 fps)")
    parser.add_argument("--raw-frames", type=int, default=30, help="4K raw clip length")
    return parser.parse_args()


def measure_rounds(clips, model, rounds: int) -> dict[str, list[dict[str, float]]]:
    names = list(clips)
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    compute_clip(*clips[names[0]], model)  # warm the session once, outside the rounds
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            measured[name].append(measure_clip(*clips[name], model))
    return measured


def measure_clip(source: ClipSource, job, model) -> dict[str, float]:
    warm = timed(lambda: source_fingerprint(source))
    evict(source.path)
    cold = timed(lambda: source_fingerprint(source))
    result = None

    def compute():
        nonlocal result
        result = compute_clip(source, job, model)

    seconds = timed(compute)
    assert result is not None and result.ok, result
    size_mb = source.path.stat().st_size / 1e6
    return {"warm_s": warm, "cold_s": cold, "compute_s": seconds, "size_mb": size_mb}


def measure_hashes(path: Path) -> dict[str, float]:
    """MB/s, best of 3, warm, of every hash read by ``readinto`` and of SHA-256 and BLAKE2b
    read the other ways."""
    size = path.stat().st_size
    ways = {f"{name} readinto 1 MiB": (readinto, name) for name in HASHES}
    for name in ("sha256", "blake2b"):
        ways[f"{name} readinto 8 MiB"] = (readinto_8m, name)
        ways[f"{name} file_digest"] = (file_digest, name)
        ways[f"{name} mmap"] = (mapped, name)
    if importlib.util.find_spec("blake3") is not None:  # not a dependency: install it to compare
        ways["blake3 readinto 1 MiB (1 thread)"] = (readinto, "blake3")
    speeds = {}
    for label, (read, name) in ways.items():
        best = min(timed(lambda read=read, name=name: read(path, name)) for _ in range(3))
        speeds[label] = size / best / 1e6
    return speeds


def readinto(path: Path, name: str, size: int = 1 << 20) -> str:
    digest = new_hash(name)
    buffer = bytearray(size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


def new_hash(name: str):
    if name == "blake3":
        import blake3

        return blake3.blake3(max_threads=1)
    return hashlib.new(name)


def readinto_8m(path: Path, name: str) -> str:
    return readinto(path, name, 8 << 20)


def file_digest(path: Path, name: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, name).hexdigest()


def mapped(path: Path, name: str) -> str:
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return hashlib.new(name, m).hexdigest()


def timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def evict(path: Path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def clips_summary(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    summary = {}
    for name, samples in rounds.items():
        medians = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
        medians["warm_ratio"] = medians["warm_s"] / medians["compute_s"]
        medians["cold_ratio"] = medians["cold_s"] / medians["compute_s"]
        summary[name] = medians
    return summary


def report(summary, hashes, load_before, load_after, options) -> None:
    print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    print(f"{options.rounds} paired rounds, medians")
    print("| clip | size | fingerprint warm | cold | compute | warm/compute | cold/compute |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row in summary.items():
        print(
            f"| {name} | {row['size_mb']:.1f} MB | {row['warm_s'] * 1e3:.1f} ms | "
            f"{row['cold_s'] * 1e3:.1f} ms | {row['compute_s'] * 1e3:.0f} ms | "
            f"{row['warm_ratio']:.2%} | {row['cold_ratio']:.2%} |"
        )
    print("hash speed on the 4K file (MB/s, best of 3, warm):")
    for label, speed in sorted(hashes.items(), key=lambda item: -item[1]):
        print(f"  {label:28} {speed:6.0f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    record = {"summary": summary, "hash_mb_s": hashes, "loadavg": [load_before, load_after]}
    (RESULTS_DIR / "fingerprint-latest.json").write_text(json.dumps(record, indent=2) + "\n")


def write_540p(path: Path, frames: int) -> Path:
    """Grainy moving gradients at 960x540, H.264 CRF 23: about a real clip's bitrate."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:540, 0:960]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "23"})
        stream.width, stream.height, stream.pix_fmt = 960, 540, "yuv420p"
        for index in range(frames):
            luma = (cols + rows // 2 + index * 3) % 220 + rng.normal(0, 4, (540, 960))
            rgb = np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_raw_4k(path: Path, frames: int) -> Path:
    rng = np.random.default_rng(1)
    frame_bytes = 3840 * 2160 * 3 // 2
    with path.open("wb") as out:
        for _ in range(frames):
            out.write(rng.integers(16, 235, frame_bytes, dtype=np.uint8).tobytes())
    return path


if __name__ == "__main__":
    main()
