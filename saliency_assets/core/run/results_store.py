"""Clip results persisted as they complete, so a rerun never recomputes a finished clip.

A store is a folder of Parquet part files (a dataset); each part is written atomically, so a
killed run loses at most the results it had not yet flushed. A result is found again only under
the same key: a fingerprint of the clip file's bytes (``core.fingerprints``), its format (the
suffix, and the geometry of raw video), the model's sha256 and a digest of the settings that
shape its numbers. A changed source, model or setting therefore means a recompute, and the same
bytes under another path, on another host, are found again. The store is a cache: a part that
cannot be read is set aside and its clips recomputed; a store that cannot be written costs the
reuse, never the table.

``results_store`` picks the store: ``default``, ``none``, a folder, or a URL whose scheme names
a backend module (``RESULTS_STORE_BACKENDS``) offering ``open_store(url, log)``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from saliency_assets.core.contract.config import RESULTS_STORE_BACKENDS, results_store_scheme
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.run.fingerprints import FingerprintMemo, default_memo_path
from saliency_assets.core.tables.table_files import atomic_write

if TYPE_CHECKING:
    import pyarrow as pa

    from saliency_assets.core.contract.config import MaterializeConfig

CACHE_ENV = "SALIENCY_ASSETS_CACHE"
COMPACT_AFTER_PARTS = 64
DAMAGED_SUFFIX = ".damaged"
_KEY_COLUMNS = ("clip_format", "source_fingerprint", "model_sha256", "settings_digest")
_REQUIRED_COLUMNS = (*_KEY_COLUMNS, "status")


@dataclass(frozen=True)
class ResultKey:
    """What a clip's numbers depend on; ``clip_key`` (the path) only says where it was seen."""

    clip_format: str
    source_fingerprint: str
    model_sha256: str
    settings_digest: str
    clip_key: str = field(default="", compare=False)

    def digest(self) -> str:
        """A short digest of the whole key: the same clip bytes, model and settings, the same
        digest (what an orchestrator can use as the result's version)."""
        text = "\0".join(
            (self.clip_format, self.source_fingerprint, self.model_sha256, self.settings_digest)
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class ClipResultStore(Protocol):
    """What the engine needs of a store; each backend module offers one."""

    def lookup_many(self, keys: Iterable[ResultKey]) -> dict[ResultKey, ClipResult]:
        """The stored results among ``keys``."""

    def save(self, results: Iterable[tuple[ResultKey, ClipResult]]) -> int:
        """Store ``results`` (transient failures excepted); return how many could not be."""

    def claim(self, key: ResultKey) -> bool:
        """Whether this run may compute ``key`` now (False: another live run is at it)."""

    def release(self, keys: Iterable[ResultKey]) -> None:
        """Give up the claims on ``keys`` (their results are saved, or will not be)."""

    def wait_for_claims(self, keys: Iterable[ResultKey]) -> None:
        """Block until no other run holds a claim on any of ``keys``."""


def store_for(config: MaterializeConfig, log: TextIO = sys.stderr) -> ClipResultStore | None:
    """The store ``results_store`` names: ``default`` (the user cache), ``none``, a folder, or a
    URL whose scheme has a backend (``validate_config`` has rejected any other URL)."""
    value = config.results_store
    if value == "none":
        return None
    if value == "default":
        return ResultStore(default_store_dir(), log)
    scheme = results_store_scheme(value)
    if scheme is not None:
        backend = importlib.import_module(RESULTS_STORE_BACKENDS[scheme])
        return backend.open_store(value, log)
    return ResultStore(Path(value), log)


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
        "hdr": config.hdr,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def source_fingerprint(source: ClipSource, memo: FingerprintMemo | None = None) -> str:
    """The fingerprint of the clip file's bytes (``core.fingerprints``): any edit changes it,
    and it is the same on every host (no time, inode or path in it), so stores can be shared."""
    return (memo or FingerprintMemo(None)).fingerprint(source.path)


def clip_format(source: ClipSource) -> str:
    """How the bytes are read: the suffix picks container or raw; raw video adds its geometry."""
    suffix = source.path.suffix.lower()
    if not source.is_raw:
        return suffix
    return f"{suffix}|{source.raw_width}x{source.raw_height}|{source.raw_pix_fmt}"


def result_keys(
    clips: dict[str, ClipSource], config: MaterializeConfig, model_sha256: str
) -> dict[str, ResultKey]:
    """The store key of every clip whose file can be read now (the others are computed, and
    report why, rather than cached)."""
    keys = ClipKeys(config, model_sha256)
    try:
        for key, source in clips.items():
            keys.key_of(key, source)
    finally:
        keys.close()
    return keys.known


class ClipKeys:
    """Store keys of clips, fingerprinted when first asked for (through this host's memo)."""

    def __init__(
        self, config: MaterializeConfig, model_sha256: str, log: TextIO | None = sys.stderr
    ) -> None:
        self.model_sha256, self.settings = model_sha256, settings_digest(config)
        self.memo = FingerprintMemo(default_memo_path(), log)
        self.known: dict[str, ResultKey] = {}

    def key_of(self, key: str, source: ClipSource) -> ResultKey | None:
        """The clip's store key; None if its file cannot be read now."""
        if key not in self.known:
            try:
                fingerprint = source_fingerprint(source, self.memo)
            except OSError:
                return None
            self.known[key] = ResultKey(
                clip_format(source), fingerprint, self.model_sha256, self.settings, key
            )
        return self.known[key]

    def close(self) -> None:
        self.memo.close()


class ResultStore:
    """A folder of Parquet parts holding clip results, keyed by ``ResultKey``."""

    def __init__(self, root: Path, log: TextIO | None = sys.stderr) -> None:
        self.root = Path(root)
        self.log = log
        self.writable = True
        self._results: dict[ResultKey, ClipResult] | None = None

    def lookup(self, key: ResultKey) -> ClipResult | None:
        return self._loaded().get(key)

    def lookup_many(self, keys: Iterable[ResultKey]) -> dict[ResultKey, ClipResult]:
        loaded = self._loaded()
        return {key: loaded[key] for key in keys if key in loaded}

    def __len__(self) -> int:
        return len(self._loaded())

    def save(self, results: Iterable[tuple[ResultKey, ClipResult]]) -> int:
        """Write one new part file atomically holding ``results``; return how many of them
        could not be written (all, once the folder has refused a write)."""
        batch = [(key, result) for key, result in results if not is_transient(result)]
        if not batch:
            return 0
        if not self._write_part([_record(key, result) for key, result in batch]):
            return len(batch)
        self._loaded().update(batch)
        return 0

    # Runs sharing a folder do not coordinate: a clip two runs start at once is computed twice.
    def claim(self, key: ResultKey) -> bool:
        return True

    def release(self, keys: Iterable[ResultKey]) -> None:
        pass

    def wait_for_claims(self, keys: Iterable[ResultKey]) -> None:
        pass

    def _loaded(self) -> dict[ResultKey, ClipResult]:
        if self._results is None:
            parts = self._part_files()
            self._results = dict(self._read_parts(parts))
            if len(parts) > COMPACT_AFTER_PARTS:
                self._compact(parts)
        return self._results

    def _compact(self, parts: list[Path]) -> None:
        """Fold many small parts into one; parts written meanwhile by others are left alone."""
        if not self._write_part([_record(key, result) for key, result in self._results.items()]):
            return
        for part in parts:
            with contextlib.suppress(OSError):  # left behind, it only repeats results
                part.unlink(missing_ok=True)

    def _write_part(self, records: list[dict]) -> bool:
        """Write a new part; a folder that refuses (full, read-only, not a folder) is warned
        about once and not written to again by this store."""
        if not self.writable:
            return False
        import pyarrow as pa  # here, not at the top: a run with no folder store never loads it
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(records, _part_schema())
        path = self.root / f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            atomic_write(path, lambda handle: pq.write_table(table, handle))
        except OSError as error:
            self.writable = False
            self._warn(
                f"cannot be written ({_reason(error)}); this run's results are not stored "
                "(the table is still written)"
            )
            return False
        return True

    def _part_files(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        except OSError as error:
            self.writable = False  # one warning: what cannot be listed is not written either
            self._warn(
                f"cannot be read ({_reason(error)}); every clip is computed and this run's "
                "results are not stored (the table is still written)"
            )
            return []
        return [self.root / name for name in names if _is_part_name(name)]

    def _read_parts(self, parts: list[Path]) -> Iterable[tuple[ResultKey, ClipResult]]:
        import pyarrow as pa

        damaged = []
        for part in parts:
            try:
                records = _read_part(part)
            except FileNotFoundError:  # compacted away by another process meanwhile
                continue
            except (OSError, pa.ArrowException, DamagedPart) as error:
                damaged.append(f"{part.name} ({_reason(error)})")
                _set_aside(part)
                continue
            for record in records:
                yield _key_of(record), _result_of(record)
        if damaged:
            self._warn(
                f"{len(damaged)} damaged part file(s) set aside as *{DAMAGED_SUFFIX}, their "
                f"clips are recomputed: {'; '.join(damaged)}"
            )

    def _warn(self, message: str) -> None:
        if self.log is not None:
            print(f"saliency: WARNING — results store {self.root}: {message}", file=self.log)


class DamagedPart(Exception):
    """A part file that reads but does not hold results in the store's schema."""


def is_transient(result: ClipResult) -> bool:
    """Failures that may not recur (timeouts, a dead worker) are not stored."""
    detail = result.detail or ""
    return not result.ok and (
        "timed out" in detail or "did not finish" in detail or "worker process died" in detail
    )


def _record(key: ResultKey, result: ClipResult) -> dict:
    return {
        "clip_key": key.clip_key,
        "clip_format": key.clip_format,
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
        "transfer": result.transfer,
    }


def _is_part_name(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


@functools.cache
def _part_schema() -> pa.Schema:
    """The columns of a part file."""
    import pyarrow as pa

    return pa.schema(
        [
            ("clip_key", pa.string()),  # where it was computed: for people, not part of the key
            ("clip_format", pa.string()),
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
            ("transfer", pa.string()),
        ]
    )


def _read_part(part: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _part_schema()
    table = pq.read_table(part)
    if set(table.schema.names) == set(schema.names) - {"clip_format"}:
        return []  # keyed by the old size-and-time fingerprint, which nothing matches now
    if "transfer" not in table.schema.names:  # parts written before the transfer was kept
        table = table.append_column(schema.field("transfer"), pa.nulls(len(table), pa.string()))
    wrong = [
        field.name
        for field in schema
        if field.name not in table.schema.names or table.schema.field(field.name).type != field.type
    ]
    if wrong:
        raise DamagedPart(f"columns missing or of the wrong type: {', '.join(wrong)}")
    if any(table[name].null_count for name in _REQUIRED_COLUMNS):
        raise DamagedPart(f"empty values in {', '.join(_REQUIRED_COLUMNS)}")
    return table.select(schema.names).to_pylist()


def _set_aside(part: Path) -> None:
    """Rename a damaged part out of the store's view, keeping it for inspection; if even that
    fails it is only skipped (and reported again) on the next run."""
    with contextlib.suppress(OSError):
        os.replace(part, part.with_name(part.name + DAMAGED_SUFFIX))


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _key_of(record: dict) -> ResultKey:
    return ResultKey(*(record[name] for name in _KEY_COLUMNS), clip_key=record["clip_key"] or "")


def _result_of(record: dict) -> ClipResult:
    return ClipResult(
        record["status"],
        record["saliency_mean"],
        record["saliency_var"],
        record["detail"],
        record["frames_used"],
        record["width"],
        record["height"],
        record["transfer"],  # null in parts written before it was kept
    )
