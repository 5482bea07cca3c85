"""Clip partitions: a readable, stable key per unique clip, and the clip index behind them.

A clip's key is its path relative to the table's root (absolute paths lose their leading
slash), plus ``@WxH_pixfmt`` for raw video. Very large tables can instead be partitioned into
hash shards, each holding the clips whose key hashes into it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from saliency_assets.core.clips import ClipSource
from saliency_assets.core.tables import atomic_write
from saliency_assets.defs.corpora import CorpusTable

REGISTER_CHUNK = 10_000
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class IndexedClip:
    partition_key: str
    clip_key: str
    source: ClipSource
    shard: str


def partitions_def(table: CorpusTable) -> dg.PartitionsDefinition:
    if table.options.partitioning == "shards":
        return dg.StaticPartitionsDefinition(shard_keys(table.options.shards))
    return dg.DynamicPartitionsDefinition(name=f"saliency_{table.name}_clips")


def shard_keys(count: int) -> list[str]:
    width = len(str(max(count - 1, 0)))
    return [f"shard-{index:0{width}d}" for index in range(count)]


def clip_partition_key(source: ClipSource, root: Path | None) -> str:
    relative = _relative(source.path, root)
    if source.is_raw:
        relative += f"@{source.raw_width}x{source.raw_height}_{source.raw_pix_fmt}"
    # Dagster forbids "..." and control characters in partition keys.
    return _UNSAFE.sub("_", relative).replace("...", "_._")


def shard_of(clip_key: str, shards: int) -> str:
    digest = int(hashlib.sha1(clip_key.encode("utf-8")).hexdigest(), 16)
    return shard_keys(shards)[digest % shards]


def index_clips(table: CorpusTable, clips: dict[str, ClipSource]) -> list[IndexedClip]:
    root = table.spec.config.root
    shards = table.options.shards or 1
    return [
        IndexedClip(clip_partition_key(source, root), key, source, shard_of(key, shards))
        for key, source in clips.items()
    ]


def register_partitions(instance: dg.DagsterInstance, name: str, keys: Iterable[str]) -> int:
    """Add the keys not yet registered, in chunks of at most 10,000; return how many were new."""
    known = set(instance.get_dynamic_partitions(name))
    new = [key for key in dict.fromkeys(keys) if key not in known]
    for start in range(0, len(new), REGISTER_CHUNK):
        instance.add_dynamic_partitions(name, new[start : start + REGISTER_CHUNK])
    return len(new)


def write_clip_index(path: Path, clips: list[IndexedClip]) -> None:
    records = [
        {
            "partition_key": clip.partition_key,
            "clip_key": clip.clip_key,
            "path": str(clip.source.path),
            "raw_width": clip.source.raw_width,
            "raw_height": clip.source.raw_height,
            "raw_pix_fmt": clip.source.raw_pix_fmt,
            "shard": clip.shard,
        }
        for clip in clips
    ]
    table = pa.Table.from_pylist(records, schema=_INDEX_SCHEMA)
    atomic_write(path, lambda handle: pq.write_table(table, handle))


def read_clip_index(path: Path) -> list[IndexedClip]:
    if not path.is_file():
        raise FileNotFoundError(
            f"clip index {path} does not exist: materialize the table's source_table first"
        )
    return [_indexed(record) for record in pq.read_table(path).to_pylist()]


def current_clip_index(
    table: CorpusTable, index_path: Path, partition_keys: list[str], sharded: bool
) -> list[IndexedClip]:
    """The stored clip index, rebuilt from the raw table when it lacks a requested partition."""
    from saliency_assets.core.engine import unique_clips
    from saliency_assets.core.tables import read_table

    if index_path.is_file():
        clips = read_clip_index(index_path)
        known = {clip.shard if sharded else clip.partition_key for clip in clips}
        if sharded or set(partition_keys) <= known:
            return clips
    rows = read_table(table.spec.input).rows
    clips = index_clips(table, unique_clips(rows, table.spec.config))
    write_clip_index(index_path, clips)
    return clips


def clips_for_partitions(
    clips: list[IndexedClip], partition_keys: Iterable[str], sharded: bool
) -> list[IndexedClip]:
    wanted = set(partition_keys)
    return [clip for clip in clips if (clip.shard if sharded else clip.partition_key) in wanted]


_INDEX_SCHEMA = pa.schema(
    [
        ("partition_key", pa.string()),
        ("clip_key", pa.string()),
        ("path", pa.string()),
        ("raw_width", pa.int64()),
        ("raw_height", pa.int64()),
        ("raw_pix_fmt", pa.string()),
        ("shard", pa.string()),
    ]
)


def _indexed(record: dict) -> IndexedClip:
    source = ClipSource(
        Path(record["path"]), record["raw_width"], record["raw_height"], record["raw_pix_fmt"]
    )
    return IndexedClip(record["partition_key"], record["clip_key"], source, record["shard"])


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        root_text, path_text = os.path.abspath(root), os.path.abspath(path)
        if os.path.commonpath([root_text, path_text]) == root_text:
            return Path(os.path.relpath(path_text, root_text)).as_posix()
    return path.as_posix().lstrip("/")
