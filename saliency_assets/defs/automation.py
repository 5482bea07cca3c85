"""What keeps a corpus table computed: a slim clip sensor and declarative automation.

The clip sensor only keeps the clip partitions equal to the table's clips: it registers new
clips and deletes removed ones when the table's bytes change (its cursor holds the table's
size, mtime and sha256, so an unchanged table costs one ``stat`` a tick), and it notices clip
files rewritten in place (a slice of its clips is re-``stat``-ed each tick) and requests their
partitions again. It compares clip files with its own snapshot of the clips, taken when it last
synced the table and named by the cursor: the clip index that runs read is rewritten by other
writers (a refresh, a run meeting a key its index lacks), and a baseline they moved would hide a
rewrite the sensor had not yet seen. What runs is decided by automation conditions: every clip
partition that is missing and not being computed (so a clip is never forgotten, however many
ticks or failed runs ago it appeared), batched per run by the asset's BackfillPolicy; and the
enriched table once no clip is missing or in progress any more. A run that fails is retried by
the instance's ``run_retries``; a partition whose run kept failing is then left alone (it ends
failed and no longer holds back the table) until its file changes or the table newly names it.
The optional cron schedule re-reads the raw table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.saliency_model import sha256_file
from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.table_files import read_table
from saliency_assets.defs.corpora import CorpusTable
from saliency_assets.defs.partitions import (
    REGISTER_CHUNK,
    file_stat,
    index_clips,
    partition_changes,
    table_clips,
    write_clip_index,
)
from saliency_assets.defs.storage import TableStorage

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
STAT_SLICE = 5_000  # clip files re-stat-ed per tick: ~10-30 ms, a full pass every N/5000 ticks
SNAPSHOTS = "clip_sensor"  # the clip sensor's snapshots, in the table's storage folder


def clip_condition() -> dg.AutomationCondition:
    """Missing clips, unless being computed or their last run failed (run_retries redoes it)."""
    return (
        dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.execution_failed()
    ).with_label("clip missing, not in progress, last run not failed")


def enriched_condition() -> dg.AutomationCondition:
    """Once a clip or the source was updated since the table was last requested (or it was
    never written and its last run did not fail), and no clip is pending or in progress."""
    pending = clip_condition() | dg.AutomationCondition.in_progress()
    never_written = dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()
    # Reset when the table is requested, not when it is written (as since_last_handled would):
    # an input that lands while the table's run is queued or running may have been read too
    # late, and that run finishing must not erase it. Both sides are single timed conditions
    # (and/or drop the timestamps) so an update landing in the tick after the request is
    # weighed by its time against the request's, not lost to it.
    updated = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).since(
        dg.AutomationCondition.newly_requested()
    )
    return (
        (never_written | updated)
        & ~dg.AutomationCondition.any_deps_match(pending).with_label("no clip pending")
        & ~dg.AutomationCondition.in_progress()
    ).with_label("inputs updated since last requested, every clip done or finally failed")


def table_automation(table: CorpusTable, keys, partitions: dg.PartitionsDefinition):
    name = f"saliency_{table.name}"
    clips_job = dg.define_asset_job(
        f"{name}_clips",
        selection=dg.AssetSelection.assets(*keys.clip_assets),
        description=f"Compute clip partitions of {table.table_id} (one, or a range by tags).",
    )
    refresh_job = dg.define_asset_job(
        f"{name}_refresh",
        selection=dg.AssetSelection.assets(keys.source_table),
        description=f"Re-read the raw table of {table.table_id} and sync its clip partitions.",
    )
    enrich_job = dg.define_asset_job(
        f"{name}_enrich",
        selection=dg.AssetSelection.assets(keys.enriched_table, *keys.comparisons),
        description=f"Write the enriched table of {table.table_id}.",
    )
    sensors = [
        _clip_sensor(table, keys, partitions, refresh_job, clips_job),
        dg.AutomationConditionSensorDefinition(
            f"{name}_automation",
            target=dg.AssetSelection.assets(
                *keys.clip_assets, keys.enriched_table, *keys.comparisons
            ),
            minimum_interval_seconds=table.options.sensor_interval_s or 30,
            default_status=_default_status(table),
            description=f"Computes missing clip partitions of {table.table_id} in batches of "
            f"{table.options.clips_per_run or 'any number of'} clips, then the enriched table "
            "once every clip is done or finally failed.",
        ),
    ]
    schedules = []
    if table.options.refresh_cron:
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_refresh_schedule",
                job=refresh_job,
                cron_schedule=table.options.refresh_cron,
                description=f"Re-reads the raw table of {table.table_id} on a schedule.",
            )
        )
    return [clips_job, refresh_job, enrich_job], sensors, schedules


@dataclass(frozen=True)
class SensorCursor:
    table_stat: str = ""
    table_sha256: str = ""
    stat_offset: int = 0

    @classmethod
    def parse(cls, text: str | None) -> SensorCursor:
        try:
            return cls(**json.loads(text)) if text else cls()
        except (TypeError, ValueError):  # an older cursor format: start over
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self))


def _default_status(table: CorpusTable) -> dg.DefaultSensorStatus:
    """Off unless the manifest says ``"automation": true`` (or someone turns it on in the UI)."""
    if table.options.automation:
        return dg.DefaultSensorStatus.RUNNING
    return dg.DefaultSensorStatus.STOPPED


def _clip_sensor(table: CorpusTable, keys, partitions, refresh_job, clips_job):
    @dg.sensor(
        name=f"saliency_{table.name}_clip_sensor",
        jobs=[refresh_job, clips_job],
        minimum_interval_seconds=table.options.sensor_interval_s or 30,
        default_status=_default_status(table),
        description=f"Keeps the clip partitions of {table.table_id} equal to the clips of "
        f"{table.spec.input} (registers new ones, deletes removed ones) and requests clips "
        "whose files changed.",
    )
    def clip_sensor(context: dg.SensorEvaluationContext):
        targets = SensorTargets(refresh_job.name, clips_job.name, tuple(keys.clip_assets))
        return clip_sensor_tick(table, partitions, context, targets)

    return clip_sensor


@dataclass(frozen=True)
class SensorTargets:
    refresh: str
    clips: str
    clip_assets: tuple[dg.AssetKey, ...]  # one per model


def clip_sensor_tick(table: CorpusTable, partitions, context, targets: SensorTargets):
    """One tick: sync partitions if the table's bytes changed, then probe a slice of clips."""
    cursor = SensorCursor.parse(context.cursor)
    if not filesystems.is_file(table.spec.input):
        where = filesystems.display(table.spec.input)
        return dg.SkipReason(f"input table {where} does not exist on this machine")
    storage = TableStorage.for_table(table, context.instance)
    result, cursor = _sync_table(table, partitions, context.instance, storage, cursor, targets)
    sharded = not isinstance(partitions, dg.DynamicPartitionsDefinition)
    seen = _snapshot(storage, cursor.table_sha256)
    rewritten, offset = _changed_clip_slice(seen, cursor.stat_offset, sharded)
    result.recompute += rewritten
    cursor = replace(cursor, stat_offset=offset)
    result.requests += [
        dg.RunRequest(run_key=run_key, job_name=targets.clips, partition_key=key)
        for key, run_key in dict.fromkeys(result.recompute)  # a clip seen twice in one tick
    ]
    if not result.requests and not result.partition_requests:
        return dg.SensorResult(skip_reason="no new, removed or changed clips", cursor=cursor.dump())
    return dg.SensorResult(
        run_requests=result.requests,
        dynamic_partitions_requests=result.partition_requests,
        cursor=cursor.dump(),
    )


def _sync_table(
    table: CorpusTable, partitions, instance, storage, cursor: SensorCursor, targets: SensorTargets
) -> tuple[TickResult, SensorCursor]:
    """Re-index the table if its bytes changed since the cursor's snapshot of its clips (or
    that snapshot is gone), and request a refresh of the source table."""
    found = filesystems.stat(table.spec.input)
    table_stat = f"{found.size}-{found.mtime_ns}"
    seen = _snapshot(storage, cursor.table_sha256)
    if table_stat == cursor.table_stat and seen.is_file():
        return TickResult(), cursor
    digest = sha256_file(table.spec.input)
    result = TickResult()
    if digest != cursor.table_sha256 or not seen.is_file():
        result = _table_changed(table, partitions, instance, storage, seen, digest, targets)
        refresh = dg.RunRequest(run_key=f"table:{digest}:{table_stat}", job_name=targets.refresh)
        result.requests.append(refresh)
    return result, replace(cursor, table_stat=table_stat, table_sha256=digest)


@dataclass
class TickResult:
    requests: list[dg.RunRequest] = field(default_factory=list)
    partition_requests: list = field(default_factory=list)
    recompute: list[tuple[str, str]] = field(default_factory=list)  # (partition, run key)


def _table_changed(table, partitions, instance, storage, seen: Path, digest, targets) -> TickResult:
    """Re-index the table: partition add/delete requests, and the partitions to recompute:
    clips rewritten since the sensor's snapshot ``seen``, and clips the table names for the
    first time whose partition's last run failed (a key registered before its clip was in the
    table: its run failed naming it, and only a new run can succeed now)."""
    # No snapshot yet (first tick, or one written by an older version): the shared index is the
    # best baseline there is.
    previous = _indexed_stats(seen if seen.is_file() else storage.clip_index)
    sharded = not isinstance(partitions, dg.DynamicPartitionsDefinition)
    clips = index_clips(table, table_clips(table, read_table(table.spec.input).rows))
    write_clip_index(storage.clip_index, clips)
    write_clip_index(_snapshot(storage, digest), clips)
    _drop_snapshots(storage, keep={seen, _snapshot(storage, digest)})
    recompute = [
        _rewritten(clip.shard if sharded else clip.partition_key, clip.stat)
        for clip in clips
        if clip.clip_key in previous and previous[clip.clip_key] != clip.stat
    ]
    if sharded:
        return TickResult(recompute=recompute)
    registered = instance.get_dynamic_partitions(partitions.name)
    named = [clip.partition_key for clip in clips if clip.clip_key not in previous]
    recompute += [
        (key, f"named:{key}:{digest}")
        for key in _failed(instance, targets.clip_assets, partitions, set(registered), named)
    ]
    changes = partition_changes(registered, [clip.partition_key for clip in clips])
    requests = [
        partitions.build_add_request(changes.added[start : start + REGISTER_CHUNK])
        for start in range(0, len(changes.added), REGISTER_CHUNK)
    ]
    if changes.removed:
        requests.append(partitions.build_delete_request(changes.removed))
    return TickResult(partition_requests=requests, recompute=recompute)


def _failed(instance, asset_keys, partitions, registered: set[str], keys: list[str]) -> list[str]:
    """Those of ``keys`` registered as partitions whose last run failed, for any model's asset."""
    keys = [key for key in keys if key in registered]
    failed: set[str] = set()
    for asset_key in asset_keys if keys else ():
        status = instance.get_status_by_partition(asset_key, keys, partitions) or {}
        failed.update(key for key in keys if status.get(key) == dg.AssetPartitionStatus.FAILED)
    return [key for key in keys if key in failed]


def _rewritten(partition_key: str, stat: str) -> tuple[str, str]:
    """A rewritten clip's partition and run key: one run per state of its file, however many
    ticks see it (the snapshot keeps the old stat until the table changes)."""
    return partition_key, f"changed:{partition_key}:{stat}"


def _snapshot(storage: TableStorage, table_sha256: str) -> Path:
    """The clips as the sensor indexed them from the table with this content: only the sensor
    writes it, so its file stats are what the sensor last acted on."""
    return storage.root / SNAPSHOTS / f"clips-{table_sha256[:16] or 'none'}.parquet"


def _drop_snapshots(storage: TableStorage, keep: set[Path]) -> None:
    """All but the cursor's snapshot and the new one (the cursor moves only once the daemon has
    submitted the tick's requests; until then the old snapshot stays the baseline)."""
    for path in (storage.root / SNAPSHOTS).glob("clips-*.parquet"):
        if path not in keep:
            path.unlink(missing_ok=True)


def _indexed_stats(index: Path) -> dict[str, str]:
    if not index.is_file():
        return {}
    columns = pq.read_table(index, columns=["clip_key", "stat"]).to_pydict()
    return dict(zip(columns["clip_key"], columns["stat"], strict=True))


def _changed_clip_slice(
    index: Path, offset: int, sharded: bool
) -> tuple[list[tuple[str, str]], int]:
    """Re-stat STAT_SLICE indexed clips from ``offset``: (partition, run key) of those whose
    file changed since indexed."""
    if not index.is_file():
        return [], 0
    key_column = "shard" if sharded else "partition_key"
    columns = pq.read_table(index, columns=[key_column, "path", "stat"]).to_pydict()
    total = len(columns["path"])
    if offset >= total:
        offset = 0
    end = min(offset + STAT_SLICE, total)
    changed = []
    for row in range(offset, end):
        now = file_stat(ClipSource(Path(columns["path"][row])))
        if columns["stat"][row] and now != columns["stat"][row]:
            changed.append(_rewritten(columns[key_column][row], now))
    return changed, end
