"""Jobs, the clip sensor and the refresh schedule of one corpus table.

The sensor notices a new or changed raw table, registers new clip partitions (in chunks) and
requests range-tagged runs of ``clips_per_run`` clips for clips not yet computed; once every
clip is computed it requests the enriched table. The optional cron schedule re-reads the raw
table (``source_table``) so scheduled refreshes pick up new rows.
"""

from collections.abc import Iterator

import dagster as dg

from saliency_assets.core.engine import unique_clips
from saliency_assets.core.tables import read_table
from saliency_assets.defs.corpora import CorpusTable
from saliency_assets.defs.partitions import REGISTER_CHUNK, index_clips

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def table_automation(table: CorpusTable, keys, partitions: dg.PartitionsDefinition):
    name = f"saliency_{table.name}"
    clips_job = dg.define_asset_job(
        f"{name}_clips",
        selection=dg.AssetSelection.assets(keys.clip_saliency),
    )
    refresh_job = dg.define_asset_job(
        f"{name}_refresh", selection=dg.AssetSelection.assets(keys.source_table)
    )
    enrich_job = dg.define_asset_job(
        f"{name}_enrich", selection=dg.AssetSelection.assets(keys.enriched_table)
    )
    sensor = _clip_sensor(table, keys, partitions, clips_job, enrich_job)
    schedules = []
    if table.options.refresh_cron:
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_refresh_schedule",
                job=refresh_job,
                cron_schedule=table.options.refresh_cron,
            )
        )
    return [clips_job, refresh_job, enrich_job], [sensor], schedules


def plan_clip_runs(
    ordered_keys: list[str],
    todo: set[str],
    clips_per_run: int,
    run_key_prefix: str,
    job_name: str | None = None,
) -> list[dg.RunRequest]:
    """Range-tagged run requests covering ``todo``, in partition order, no range over a done key."""
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{chunk[0]}...{chunk[-1]}",
            job_name=job_name,
            tags={RANGE_START_TAG: chunk[0], RANGE_END_TAG: chunk[-1]},
        )
        for chunk in _contiguous_chunks(ordered_keys, todo, clips_per_run)
    ]


def _contiguous_chunks(ordered_keys: list[str], todo: set[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for key in ordered_keys:
        if key in todo:
            chunk.append(key)
            if size and len(chunk) == size:
                yield chunk
                chunk = []
        elif chunk:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _clip_sensor(table: CorpusTable, keys, partitions, clips_job, enrich_job):
    dynamic = isinstance(partitions, dg.DynamicPartitionsDefinition)

    @dg.sensor(
        name=f"saliency_{table.name}_clip_sensor",
        jobs=[clips_job, enrich_job],
        minimum_interval_seconds=table.options.sensor_interval_s or 30,
        description=f"Registers new clips of {table.spec.input} and requests their runs.",
    )
    def clip_sensor(context: dg.SensorEvaluationContext):
        if not table.spec.input.is_file():
            return dg.SkipReason(f"input table {table.spec.input} does not exist")
        stat = table.spec.input.stat()
        fingerprint = f"{stat.st_size}-{stat.st_mtime_ns}"
        rows = read_table(table.spec.input).rows
        clips = index_clips(table, unique_clips(rows, table.spec.config))
        wanted = [clip.shard if not dynamic else clip.partition_key for clip in clips]
        ordered, new = _partition_order(context.instance, partitions, wanted, dynamic)
        done = context.instance.get_materialized_partitions(keys.clip_saliency)
        todo = set(wanted) - set(done)
        requests = plan_clip_runs(
            ordered, todo, table.options.clips_per_run, fingerprint, clips_job.name
        )
        if not todo:
            requests += _enrich_request(context.instance, keys, enrich_job)
        adds = (
            [
                partitions.build_add_request(new[i : i + REGISTER_CHUNK])
                for i in range(0, len(new), REGISTER_CHUNK)
            ]
            if dynamic
            else []
        )
        return dg.SensorResult(
            run_requests=requests, dynamic_partitions_requests=adds, cursor=fingerprint
        )

    return clip_sensor


def _partition_order(instance, partitions, wanted: list[str], dynamic: bool):
    if not dynamic:
        return partitions.get_partition_keys(), []
    registered = instance.get_dynamic_partitions(partitions.name)
    known = set(registered)
    new = [key for key in dict.fromkeys(wanted) if key not in known]
    return [*registered, *new], new


def _enrich_request(instance, keys, enrich_job) -> list[dg.RunRequest]:
    """Request the enriched table when clips or the source were materialized after it."""
    latest_inputs = [
        instance.get_latest_materialization_event(key)
        for key in (keys.source_table, keys.clip_saliency)
    ]
    stamps = [event.timestamp for event in latest_inputs if event is not None]
    if not stamps:
        return []
    enriched = instance.get_latest_materialization_event(keys.enriched_table)
    if enriched is not None and enriched.timestamp >= max(stamps):
        return []
    return [dg.RunRequest(run_key=f"enrich:{max(stamps):.3f}", job_name=enrich_job.name)]
