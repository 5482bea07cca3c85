"""Clip partitions: a readable, stable key per unique clip, and the clip index behind them.

A clip's key is its path relative to the table's root (a clip outside the root keeps its
absolute path), plus ``@WxH_pixfmt`` for raw video. The few characters Dagster forbids in a key
(control characters, ``...``) and the two the key itself uses (``%``, ``@``) are percent-escaped,
so the escape is reversible and two clips never share a key. Very large tables can instead be
partitioned into hash shards, each holding the clips whose key hashes into it.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.table_files import atomic_write
from saliency_assets.defs.corpora import CorpusTable

REGISTER_CHUNK = 10_000
_ESCAPED = re.compile(r"[\x00-\x1f\x7f%@]")


@dataclass(frozen=True)
class IndexedClip:
    partition_key: str
    clip_key: str
    source: ClipSource
    shard: str
    stat: str = ""  # the clip file's size and mtime when indexed: a cheap "did it change" probe


def partitions_def(table: CorpusTable) -> dg.PartitionsDefinition:
    if table.options.partitioning == "shards":
        return dg.StaticPartitionsDefinition(shard_keys(table.options.shards))
    return dg.DynamicPartitionsDefinition(name=f"saliency_{table.name}_clips")


def shard_keys(count: int) -> list[str]:
    return [shard_name(index, count) for index in range(count)]


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:0{len(str(max(count - 1, 0)))}d}"


def clip_partition_key(source: ClipSource, root: Path | None) -> str:
    key = escape_key_part(_relative(source.path, root))
    if source.is_raw:
        key += f"@{source.raw_width}x{source.raw_height}_{escape_key_part(source.raw_pix_fmt)}"
    return key


def escape_key_part(text: str) -> str:
    """Percent-escape what Dagster forbids in a key and the key's own separators; reversible."""
    escaped = _ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", text)
    while "..." in escaped:  # Dagster forbids "..." (it separates the ends of a range)
        escaped = escaped.replace("...", "..%2E")
    return escaped


def unescape_key_part(text: str) -> str:
    return urllib.parse.unquote(text)


def shard_of(clip_key: str, shards: int) -> str:
    digest = int(hashlib.sha1(clip_key.encode("utf-8")).hexdigest(), 16)
    return shard_name(digest % shards, shards)


def table_clips(table: CorpusTable, rows: Iterable[dict[str, Any]]) -> dict[str, ClipSource]:
    """The table's unique clips: every clip some row still needs from one of its models."""
    from saliency_assets.core.run.engine import unique_clips

    values = [model.values for model in table.spec.models]
    return unique_clips(rows, table.spec.config, values)


def index_clips(table: CorpusTable, clips: dict[str, ClipSource]) -> list[IndexedClip]:
    root = table.spec.config.root
    shards = table.options.shards or 1
    return [
        IndexedClip(
            clip_partition_key(source, root), key, source, shard_of(key, shards), file_stat(source)
        )
        for key, source in clips.items()
    ]


def file_stat(source: ClipSource) -> str:
    """Size and modification time, or ``missing``: changes whenever the file is rewritten."""
    try:
        found = filesystems.stat(source.path)  # also for s3:// clips
    except OSError:
        return "missing"
    return "missing" if found.kind == "missing" else f"{found.size}-{found.mtime_ns}"


@dataclass(frozen=True)
class PartitionChanges:
    added: list[str]
    removed: list[str]


def partition_changes(registered: Iterable[str], wanted: Iterable[str]) -> PartitionChanges:
    """Which keys to add (in table order) and which to delete so the partitions match the table."""
    wanted_keys = list(dict.fromkeys(wanted))
    known, wanted_set = set(registered), set(wanted_keys)
    return PartitionChanges(
        [key for key in wanted_keys if key not in known],
        sorted(known - wanted_set),
    )


def sync_partitions(
    instance: dg.DagsterInstance, name: str, keys: Iterable[str]
) -> PartitionChanges:
    """Add the table's new clips (in chunks of 10,000) and delete the partitions of removed ones.

    A removed clip's stored result stays in the results store; only its partition goes.
    """
    changes = partition_changes(instance.get_dynamic_partitions(name), keys)
    for start in range(0, len(changes.added), REGISTER_CHUNK):
        instance.add_dynamic_partitions(name, changes.added[start : start + REGISTER_CHUNK])
    for key in changes.removed:
        instance.delete_dynamic_partition(name, key)
    return changes


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
            "stat": clip.stat,
        }
        for clip in clips
    ]
    table = pa.Table.from_pylist(records, schema=_INDEX_SCHEMA)
    atomic_write(path, lambda handle: pq.write_table(table, handle))


def read_clip_index(path: Path, partition_keys: list[str], sharded: bool) -> list[IndexedClip]:
    """The indexed clips of ``partition_keys`` only (a run reads its own rows, not 150k)."""
    column = "shard" if sharded else "partition_key"
    rows = pq.read_table(path, filters=[(column, "in", list(partition_keys))]).to_pylist()
    return [_indexed(record) for record in rows]


def clips_of_partitions(
    table: CorpusTable, index_path: Path, partition_keys: list[str], sharded: bool
) -> list[IndexedClip]:
    """The clips of the run's partitions, from the stored index (rebuilt from the raw table
    when it lacks a requested clip); a key that names no clip of the table is an error."""
    from saliency_assets.core.tables.table_files import read_table

    column = "shard" if sharded else "partition_key"
    if index_path.is_file():
        clips = read_clip_index(index_path, partition_keys, sharded)
        if sharded or not _unknown_keys(clips, partition_keys):
            return clips
    indexed = index_clips(table, table_clips(table, read_table(table.spec.input).rows))
    write_clip_index(index_path, indexed)
    wanted = set(partition_keys)
    clips = [clip for clip in indexed if getattr(clip, column) in wanted]
    unknown = [] if sharded else _unknown_keys(clips, partition_keys)
    if unknown:
        raise UnknownClipKeys(table.table_id, unknown)
    return clips


class UnknownClipKeys(ValueError):
    def __init__(self, table_id: str, keys: list[str]) -> None:
        shown = ", ".join(repr(key) for key in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        super().__init__(
            f"partition key {shown}{more} names no clip of table {table_id!r}: the clip is not "
            "(or no longer) in the table, or the key was typed by hand"
        )
        self.keys = keys


def _unknown_keys(clips: list[IndexedClip], partition_keys: Iterable[str]) -> list[str]:
    known = {clip.partition_key for clip in clips}
    return sorted(set(partition_keys) - known)


_INDEX_SCHEMA = pa.schema(
    [
        ("partition_key", pa.string()),
        ("clip_key", pa.string()),
        ("path", pa.string()),
        ("raw_width", pa.int64()),
        ("raw_height", pa.int64()),
        ("raw_pix_fmt", pa.string()),
        ("shard", pa.string()),
        ("stat", pa.string()),
    ]
)


def _indexed(record: dict) -> IndexedClip:
    source = ClipSource(
        Path(record["path"]), record["raw_width"], record["raw_height"], record["raw_pix_fmt"]
    )
    return IndexedClip(
        record["partition_key"],
        record["clip_key"],
        source,
        record["shard"],
        record.get("stat") or "",
    )


def _relative(path: Path, root: Path | None) -> str:
    if root is not None:
        root_text, path_text = os.path.abspath(root), os.path.abspath(path)
        if os.path.commonpath([root_text, path_text]) == root_text:
            return Path(os.path.relpath(path_text, root_text)).as_posix()
    # Outside the root the absolute path stays absolute, so it never equals a relative key.
    return path.as_posix()
