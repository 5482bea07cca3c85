"""The cost of the results store's source fingerprint (BLAKE3 of every byte) beside a clip's
compute: a 540p H.264 clip and a 4K raw .yuv, both at --inference-size 288 (the cheapest
compute, so the largest ratio) and the 4K raw at native size too, in paired rounds whose order
rotates.

Each round, for each clip: the fingerprint with the file in the page cache (warm: a run that
has just read or written it), the fingerprint after evicting the file from the page cache
(cold: ``posix_fadvise(DONTNEED)``, no root needed), the first run through this host's memo
(hash and remember) and a rerun (the memo's answer), then the clip's compute in process (decode
+ inference through ``compute_clip``, one model session, as a worker does). Also times the
candidate hashes and reading strategies on the 4K file, so the choice (BLAKE3 on one thread,
``readinto`` a 1 MiB buffer) can be checked here.

Then end to end, on a small corpus of 4K raw clips at 288 with the product's worker pool
(``compute_clips``, 2 jobs), paired rounds in rotating order: no store (compute only); the old
order (every fingerprint first, then the compute); the new order (fingerprints taken as the
workers take clips, overlapping them); a rerun whose clips are all stored, with and without
the memo. The load average is recorded with every round.

    python benchmarks/fingerprint.py            # --rounds 5 --frames 240 --raw-frames 30
    python benchmarks/fingerprint.py --rounds 0 --corpus-rounds 3   # end to end only
"""

from __future__ import annotations

import argparse
import hashlib
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
import blake3
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS_DIR, shared_model  # noqa: E402

from saliency_assets.core.contract.config import MaterializeConfig  # noqa: E402
from saliency_assets.core.decode.clips import ClipSource  # noqa: E402
from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip  # noqa: E402
from saliency_assets.core.model.saliency_model import SaliencyModel  # noqa: E402
from saliency_assets.core.run.engine import compute_clips, prepare_model  # noqa: E402
from saliency_assets.core.run.fingerprints import (  # noqa: E402
    MEMO_ENV,
    SETTLED_AFTER_NS,
    FingerprintMemo,  # noqa: E402
)
from saliency_assets.core.run.results_store import (  # noqa: E402
    ResultStore,
    result_keys,
    source_fingerprint,
)

HASHES = ("sha256", "blake2b", "sha1", "md5", "blake3")


def main() -> None:
    options = parse_args()
    load_before = loadavg()
    record: dict = {"options": vars(options)}
    with tempfile.TemporaryDirectory(prefix="fingerprint-bench-") as folder:
        if options.rounds:
            record.update(measure_per_clip(Path(folder), options))
        if options.corpus_rounds:
            corpus = write_corpus(Path(folder) / "corpus", options.corpus_clips, options.raw_frames)
            record["end_to_end"] = measure_end_to_end(corpus, Path(folder), options.corpus_rounds)
    record["loadavg"] = [load_before, loadavg()]
    report(record)


def measure_per_clip(folder: Path, options: argparse.Namespace) -> dict:
    small = ClipSource(write_540p(folder / "clip_540p.mp4", options.frames))
    raw_path = write_raw_4k(folder / "clip_3840x2160.yuv", options.raw_frames)
    raw = ClipSource(raw_path, 3840, 2160, "yuv420p")
    at_288 = ClipJob.from_config(MaterializeConfig(inference_size=288), shared_model())
    native = ClipJob.from_config(MaterializeConfig(), shared_model())
    clips = {
        "540p h264 @288": (small, at_288),
        "2160p raw @288": (raw, at_288),
    }
    if options.native:
        clips["2160p raw native"] = (raw, native)
    time.sleep(SETTLED_AFTER_NS / 1e9)  # the memo remembers only files settled this long
    model = SaliencyModel(at_288.model_path, at_288.providers)
    rounds = measure_rounds(clips, model, options.rounds, folder)
    return {"summary": clips_summary(rounds), "hash_mb_s": measure_hashes(raw_path)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="per-clip rounds (0: skip)")
    parser.add_argument("--frames", type=int, default=240, help="540p clip length (25 fps)")
    parser.add_argument("--raw-frames", type=int, default=30, help="4K raw clip length")
    parser.add_argument("--no-native", dest="native", action="store_false", help="skip 4K native")
    parser.add_argument("--corpus-rounds", type=int, default=3, help="end-to-end rounds (0: skip)")
    parser.add_argument("--corpus-clips", type=int, default=6, help="4K raw clips end to end")
    return parser.parse_args()


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def measure_rounds(clips, model, rounds: int, folder: Path) -> dict[str, list[dict[str, float]]]:
    names = list(clips)
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    compute_clip(*clips[names[0]], model)  # warm the session once, outside the rounds
    for index in range(rounds):
        for name in rotated(names, index):
            memo_path = folder / f"memo-{index}-{names.index(name)}.sqlite"
            measured[name].append(measure_clip(*clips[name], model, memo_path))
    return measured


def rotated(names: list[str], index: int) -> list[str]:
    return names[index % len(names) :] + names[: index % len(names)]


def measure_clip(source: ClipSource, job, model, memo_path: Path) -> dict[str, float]:
    warm = timed(lambda: source_fingerprint(source))
    evict(source.path)
    cold = timed(lambda: source_fingerprint(source))
    memo_first = timed(lambda: FingerprintMemo(memo_path).fingerprint(source.path))
    memo_rerun = timed(lambda: FingerprintMemo(memo_path).fingerprint(source.path))
    result = None

    def compute():
        nonlocal result
        result = compute_clip(source, job, model)

    seconds = timed(compute)
    assert result is not None and result.ok, result
    size_mb = source.path.stat().st_size / 1e6
    return {
        "warm_s": warm,
        "cold_s": cold,
        "memo_first_s": memo_first,
        "memo_rerun_s": memo_rerun,
        "compute_s": seconds,
        "size_mb": size_mb,
    }


def measure_hashes(path: Path) -> dict[str, float]:
    """MB/s, best of 3, warm, of every hash read by ``readinto`` and of SHA-256 and BLAKE2b
    read the other ways."""
    size = path.stat().st_size
    ways = {f"{name} readinto 1 MiB": (readinto, name) for name in HASHES}
    for name in ("sha256", "blake2b"):
        ways[f"{name} readinto 8 MiB"] = (readinto_8m, name)
        ways[f"{name} file_digest"] = (file_digest, name)
        ways[f"{name} mmap"] = (mapped, name)
    ways["blake3 readinto 8 MiB"] = (readinto_8m, "blake3")
    ways["blake3 update_mmap"] = (blake3_mapped, "blake3")
    ways["blake3 all threads readinto 1 MiB"] = (readinto, "blake3-threads")
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
        return blake3.blake3(max_threads=1)
    if name == "blake3-threads":
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return hashlib.new(name)


def blake3_mapped(path: Path, name: str) -> str:
    return blake3.blake3(max_threads=1).update_mmap(path).hexdigest()


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
        for kind in ("warm", "cold", "memo_first", "memo_rerun"):
            medians[f"{kind}_ratio"] = medians[f"{kind}_s"] / medians["compute_s"]
        summary[name] = medians
    return summary


def write_corpus(folder: Path, clips: int, frames: int) -> dict[str, ClipSource]:
    folder.mkdir()
    corpus = {}
    for index in range(clips):
        path = write_raw_4k(folder / f"clip{index}_3840x2160.yuv", frames, seed=index)
        corpus[path.name] = ClipSource(path, 3840, 2160, "yuv420p")
    time.sleep(SETTLED_AFTER_NS / 1e9)
    return corpus


def measure_end_to_end(corpus: dict[str, ClipSource], folder: Path, rounds: int) -> dict:
    """Wall seconds of each way through ``compute_clips`` (2 workers, 288), per round."""
    config = MaterializeConfig(inference_size=288, jobs=2, model_path=shared_model())
    model = prepare_model(config)
    memo_path = folder / "memo-e2e.sqlite"

    def run(store_dir: Path | None, memo: str) -> float:
        os.environ[MEMO_ENV] = memo
        store = ResultStore(store_dir, log=None) if store_dir else None
        return timed(lambda: compute_clips(corpus, config, model, store=store, log=sys.stderr))

    def up_front(store: Path) -> float:
        """The old order: every file hashed (into a fresh memo), then the compute, whose
        fingerprints are then the memo's answers (a fraction of a millisecond each)."""
        memo = store.with_suffix(".sqlite")
        os.environ[MEMO_ENV] = str(memo)
        return timed(lambda: result_keys(corpus, config, model.sha256)) + run(store, str(memo))

    ways = {
        "compute only (no store)": lambda store: run(None, "none"),
        "fingerprints first, then compute (old)": up_front,
        "fingerprints as clips are taken (new)": lambda store: run(
            store, str(store.with_suffix(".sqlite"))
        ),
        "rerun, all stored, no memo": lambda store: run(store, "none"),
        "rerun, all stored, memo": lambda store: run(store, str(memo_path)),
    }
    samples: dict[str, list] = {name: [] for name in ways}
    for index in range(rounds):
        store = folder / f"store-{index}"
        run(store, str(memo_path))  # fills this round's store (and the memo) for the reruns
        for name in rotated(list(ways), index):
            store_for_way = folder / f"fresh-{index}-{list(ways).index(name)}"
            target = store if name.startswith("rerun") else store_for_way
            samples[name].append({"s": ways[name](target), "loadavg": loadavg()})
    return samples


def report(record: dict) -> None:
    before, after = record["loadavg"]
    print(f"load average before {' '.join(before)}, after {' '.join(after)}")
    if "summary" in record:
        report_per_clip(record["summary"], record["hash_mb_s"])
    if "end_to_end" in record:
        report_end_to_end(record["end_to_end"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "fingerprint-latest.json").write_text(json.dumps(record, indent=2) + "\n")


def report_per_clip(summary: dict, hashes: dict[str, float]) -> None:
    print("per clip, medians of the paired rounds")
    print("| clip | size | warm | cold | memo, first run | memo, rerun | compute | warm, cold, "
          "memo rerun / compute |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in summary.items():
        print(
            f"| {name} | {row['size_mb']:.1f} MB | {row['warm_s'] * 1e3:.1f} ms | "
            f"{row['cold_s'] * 1e3:.1f} ms | {row['memo_first_s'] * 1e3:.1f} ms | "
            f"{row['memo_rerun_s'] * 1e3:.2f} ms | {row['compute_s'] * 1e3:.0f} ms | "
            f"{row['warm_ratio']:.2%}, {row['cold_ratio']:.2%}, {row['memo_rerun_ratio']:.3%} |"
        )
    print("hash speed on the 4K file (MB/s, best of 3, warm):")
    for label, speed in sorted(hashes.items(), key=lambda item: -item[1]):
        print(f"  {label:36} {speed:6.0f}")


def report_end_to_end(samples: dict[str, list]) -> None:
    print("end to end, 4K raw corpus at 288, 2 workers: median wall s [each round: s @ load]")
    for name, runs in samples.items():
        each = ", ".join(f"{run['s']:.1f} @ {run['loadavg'][0]}" for run in runs)
        print(f"  {name:40} {statistics.median(run['s'] for run in runs):7.1f}  [{each}]")


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


def write_raw_4k(path: Path, frames: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    frame_bytes = 3840 * 2160 * 3 // 2
    with path.open("wb") as out:
        for _ in range(frames):
            out.write(rng.integers(16, 235, frame_bytes, dtype=np.uint8).tobytes())
    return path


if __name__ == "__main__":
    main()
