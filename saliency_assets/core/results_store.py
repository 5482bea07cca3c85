"""Clip results persisted as they complete, so a rerun never recomputes a finished clip.

A store is a folder of Parquet part files (a dataset); each part is written atomically, so a
killed run loses at most the results it had not yet flushed. A result is found again only under
the same key: the clip, a fingerprint of its file, the model's sha256 and a digest of the
settings that shape its numbers. A changed source, model or setting therefore means a recompute.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from saliency_assets.core import filesystems
from saliency_assets.core.clip_saliency import ClipResult
from saliency_assets.core.clips import ClipSource
from saliency_assets.core.config import MaterializeConfig
from saliency_assets.core.tables import atomic_write

CACHE_ENV = "SALIENCY_ASSETS_CACHE"
FINGERPRINT_HEAD_BYTES = 64 * 1024
COMPACT_AFTER_PARTS = 64
_SCHEMA = pa.schema(
    [
        ("clip_key", pa.string()),
        ("source_fingerprint", pa.string()),
        ("model_sha256", pa.string()),
        ("settings_digest", pa.string()),
        ("status", pa.string()),
        ("saliency_mean", pa.float64()),
        ("saliency_var", pa.float64()),
        ("detail", pa.string()),
        ("frames_used", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("computed_at", pa.float64()),
    ]
)


@dataclass(frozen=True)
class ResultKey:
    clip_key: str
    source_fingerprint: str
    model_sha256: str
    settings_digest: str


def store_for(config: MaterializeConfig) -> ResultStore | None:
    """The store a config names: ``default`` (the user cache), ``none``, or a folder path."""
    if config.results_store == "none":
        return None
    if config.results_store == "default":
        return ResultStore(default_store_dir())
    return ResultStore(Path(config.results_store))


def default_store_dir() -> Path:
    """``$SALIENCY_ASSETS_CACHE``, else ``$XDG_CACHE_HOME/saliency-assets/results``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "saliency-assets" / "results"


def settings_digest(config: MaterializeConfig) -> str:
    """A digest of every setting that changes a clip's numbers (not columns or paths)."""
    settings = {
        "max_frames": config.max_frames,
        "frame_samples": config.frame_samples,
        "sampling": config.sampling,
        "inference_size": config.inference_size,
        "temporal_aggregator": config.temporal_aggregator,
        "ema_alpha": config.ema_alpha,
        "decoder": "ffmpeg-binary" if config.ffmpeg_bin else "pyav",
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def source_fingerprint(source: ClipSource) -> str:
    """Size, modification time and a hash of the file's (or object's) first 64 KiB: cheap,
    changes on edit."""
    digest = hashlib.sha256()
    with filesystems.open_input(source.path) as handle:  # FileNotFoundError if missing
        digest.update(handle.read(FINGERPRINT_HEAD_BYTES))
    found = filesystems.stat(source.path)
    return f"{found.size}-{found.mtime_ns}-{digest.hexdigest()[:16]}"


class ResultStore:
    """A folder of Parquet parts holding clip results, keyed by ``ResultKey``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._results: dict[ResultKey, ClipResult] | None = None

    def lookup(self, key: ResultKey) -> ClipResult | None:
        return self._loaded().get(key)

    def __len__(self) -> int:
        return len(self._loaded())

    def save(self, results: Iterable[tuple[ResultKey, ClipResult]]) -> None:
        """Write one new part file atomically holding ``results``."""
        batch = [(key, result) for key, result in results if not is_transient(result)]
        if not batch:
            return
        table = pa.Table.from_pylist([_record(key, result) for key, result in batch], _SCHEMA)
        atomic_write(self._new_part_path(), lambda handle: pq.write_table(table, handle))
        self._loaded().update(batch)

    def _loaded(self) -> dict[ResultKey, ClipResult]:
        if self._results is None:
            parts = _part_files(self.root)
            self._results = dict(_read_parts(parts))
            if len(parts) > COMPACT_AFTER_PARTS:
                self._compact(parts)
        return self._results

    def _compact(self, parts: list[Path]) -> None:
        """Fold many small parts into one; parts written meanwhile by others are left alone."""
        records = [_record(key, result) for key, result in self._results.items()]
        table = pa.Table.from_pylist(records, _SCHEMA)
        atomic_write(self._new_part_path(), lambda handle: pq.write_table(table, handle))
        for part in parts:
            part.unlink(missing_ok=True)

    def _new_part_path(self) -> Path:
        return self.root / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"


def is_transient(result: ClipResult) -> bool:
    """Failures that may not recur (timeouts, a dead worker) are not stored."""
    detail = result.detail or ""
    return not result.ok and (
        "timed out" in detail or "did not finish" in detail or "worker process died" in detail
    )


def _record(key: ResultKey, result: ClipResult) -> dict:
    return {
        "clip_key": key.clip_key,
        "source_fingerprint": key.source_fingerprint,
        "model_sha256": key.model_sha256,
        "settings_digest": key.settings_digest,
        "status": result.status,
        "saliency_mean": result.saliency_mean,
        "saliency_var": result.saliency_var,
        "detail": result.detail,
        "frames_used": result.frames_used,
        "width": result.width,
        "height": result.height,
        "computed_at": time.time(),
    }


def _part_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    names = sorted(os.listdir(root))
    return [root / name for name in names if name.startswith("part-") and name.endswith(".parquet")]


def _read_parts(parts: list[Path]) -> Iterable[tuple[ResultKey, ClipResult]]:
    for part in parts:
        try:
            records = pq.read_table(part, schema=_SCHEMA).to_pylist()
        except FileNotFoundError:  # compacted away by another process meanwhile
            continue
        for record in records:
            yield _key_of(record), _result_of(record)


def _key_of(record: dict) -> ResultKey:
    return ResultKey(
        record["clip_key"],
        record["source_fingerprint"],
        record["model_sha256"],
        record["settings_digest"],
    )


def _result_of(record: dict) -> ClipResult:
    return ClipResult(
        record["status"],
        record["saliency_mean"],
        record["saliency_var"],
        record["detail"],
        record["frames_used"],
        record["width"],
        record["height"],
    )
