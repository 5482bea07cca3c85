"""One manifest table in, one set of Dagster definitions out.

``saliency/<table>/source_table`` reads the raw feature table and registers the clip partitions;
``saliency/<table>/clip_saliency`` computes a batch of clips per run through the core engine and
persists each result in the table's results store; ``saliency/<table>/enriched_table`` joins the
results back onto every row and writes the output table and its audit exactly as the CLI does.
"""

import time
import warnings
from pathlib import Path

import dagster as dg

from saliency_assets.core.contract.config import MaterializeConfig, results_store_scheme
from saliency_assets.core.contract.statuses import OK
from saliency_assets.core.model.saliency_model import sha256_file
from saliency_assets.core.run.engine import compute_clips, unique_clips
from saliency_assets.core.run.results_store import (
    ClipResultStore,
    ResultStore,
    settings_digest,
    store_for,
)
from saliency_assets.core.run.table_run import audit_record, materialize_table, write_audit
from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.table_files import read_table
from saliency_assets.defs import checks, clip_events, metadata
from saliency_assets.defs.automation import clip_condition, enriched_condition
from saliency_assets.defs.corpora import CorpusTable
from saliency_assets.defs.partitions import (
    UnknownClipKeys,
    clips_of_partitions,
    index_clips,
    partitions_def,
    sync_partitions,
    write_clip_index,
)
from saliency_assets.defs.resources import FFmpegDecoder, RayCluster, SaliencyModelResource
from saliency_assets.defs.storage import TableStorage

MODEL_POOL = "saliency_model"
# Bump when a change to the clip computation changes results the store's key does not cover.
CLIP_CODE_VERSION = "1"


def corpus_table_defs(table: CorpusTable) -> dg.Definitions:
    """Assets, checks, jobs, sensor and schedule for one corpus table."""
    from saliency_assets.defs.automation import table_automation

    keys = TableKeys(table)
    partitions = partitions_def(table)
    assets = [
        _source_table_asset(table, keys, partitions),
        _clip_saliency_asset(table, keys, partitions),
        _enriched_table_asset(table, keys),
    ]
    coverage = checks.coverage_check(table, keys.enriched_table, keys.clip_saliency)
    jobs, sensors, schedules = table_automation(table, keys, partitions)
    return dg.Definitions(
        assets=assets,
        asset_checks=[coverage, checks.signal_check(table, keys.enriched_table)],
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
    )


class TableKeys:
    """The names one table's definitions are known by."""

    def __init__(self, table: CorpusTable) -> None:
        prefix = ["saliency", table.table_id]
        self.source_table = dg.AssetKey([*prefix, "source_table"])
        self.clip_saliency = dg.AssetKey([*prefix, "clip_saliency"])
        self.enriched_table = dg.AssetKey([*prefix, "enriched_table"])
        self.group = f"saliency_{table.name}"


def effective_config(
    table: CorpusTable, decoder: FFmpegDecoder, model: SaliencyModelResource, ray: RayCluster
) -> MaterializeConfig:
    """The manifest config with the run's decoder, model and cluster overrides applied."""
    return ray.apply(model.apply(decoder.apply(table.spec.config)))


def _source_table_asset(table: CorpusTable, keys: TableKeys, partitions) -> dg.AssetsDefinition:
    @dg.asset(
        key=keys.source_table,
        group_name=keys.group,
        kinds={"jsonl" if table.spec.input.suffix.lower() == ".jsonl" else "parquet"},
        description=_unavailable_note(table)
        + f"The raw feature table {table.spec.input}, read and indexed by clip.",
        tags=_availability_tags(table),
    )
    def source_table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = TableStorage.for_table(table, context.instance)
        rows = read_table(_existing(table.spec.input, "input table")).rows
        clips = index_clips(table, unique_clips(rows, table.spec.config))
        write_clip_index(storage.clip_index, clips)
        added, removed = 0, 0
        if isinstance(partitions, dg.DynamicPartitionsDefinition):
            changes = sync_partitions(
                context.instance, partitions.name, [c.partition_key for c in clips]
            )
            added, removed = len(changes.added), len(changes.removed)
        content_hash = sha256_file(table.spec.input)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(table.spec.input)),
                "sha256": content_hash,
                "rows": len(rows),
                "unique_clips": len(clips),
                "new_partitions": added,
                "removed_partitions": removed,
                "dagster/row_count": len(rows),
            },
            # The table's content: an unchanged table keeps its version, so nothing downstream
            # turns stale on a rerun.
            data_version=dg.DataVersion(content_hash),
        )

    return source_table


def _clip_saliency_asset(table: CorpusTable, keys: TableKeys, partitions) -> dg.AssetsDefinition:
    per_run = table.options.clips_per_run
    policy = (
        dg.BackfillPolicy.multi_run(max_partitions_per_run=per_run)
        if per_run
        else dg.BackfillPolicy.single_run()
    )
    # skippable: the step logs each partition's materialization itself (clip_events), so
    # Dagster must not add one shared materialization per partition on top.
    # No edge from source_table: the table only says which clips exist (the partitions); a
    # clip's value depends on its own bytes, the model and the settings, so a changed table
    # must not make every clip stale.
    spec = dg.AssetSpec(
        keys.clip_saliency,
        group_name=keys.group,
        partitions_def=partitions,
        automation_condition=clip_condition(),
        skippable=True,
        code_version=CLIP_CODE_VERSION,
        kinds={"onnx", "ffmpeg"},
        tags=_availability_tags(table),
        description=_unavailable_note(table)
        + "Per-clip saliency, computed in batches and kept in the results store. "
        "Each partition carries its clip's status, values and a data version (a digest of the "
        "clip's bytes fingerprint, the model and the settings).",
    )

    def clip_saliency(
        context: dg.AssetExecutionContext,
        decoder: FFmpegDecoder,
        model: SaliencyModelResource,
        ray: RayCluster,
    ):
        yield from compute_clip_batch(
            table, context, effective_config(table, decoder, model, ray), model
        )

    # backfill_policy= is a BetaWarning in 1.13; the multi-run policy is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        decorate = dg.multi_asset(
            name=f"saliency_{table.name}_clip_saliency",
            specs=[spec],
            partitions_def=partitions,
            backfill_policy=policy,
            pool=MODEL_POOL,
            check_specs=[checks.batch_status_spec(keys.clip_saliency)],
        )
        return decorate(clip_saliency)


def compute_clip_batch(
    table: CorpusTable,
    context: dg.AssetExecutionContext,
    config: MaterializeConfig,
    model_resource: SaliencyModelResource,
):
    """Compute the run's clip partitions (a key, a range, or shards) into the results store,
    then log each partition's own materialization and the batch's status check."""
    keys = TableKeys(table)
    model = model_resource.choice(config)
    storage = TableStorage.for_table(table, context.instance)
    sharded = table.options.partitioning == "shards"
    _existing(table.spec.input, "input table")
    try:
        batch = clips_of_partitions(table, storage.clip_index, context.partition_keys, sharded)
    except UnknownClipKeys as error:
        raise dg.Failure(description=str(error)) from None
    started = time.monotonic()
    computed = compute_clips(
        {clip.clip_key: clip.source for clip in batch},
        config,
        model,
        store=_results_store(config, storage),
    )
    seconds = time.monotonic() - started
    shared = clip_events.BatchContext(
        keys.clip_saliency, model, settings_digest(config), CLIP_CODE_VERSION
    )
    events = list(_partition_events(batch, computed, shared, context.partition_keys, sharded))
    yield from clip_events.batched(context, events)
    context.log.info(
        "batch: %s", metadata.batch_metadata(computed.results, computed.reused, seconds, model)
    )
    yield checks.batch_status_result(
        {clip.partition_key: computed.results[clip.clip_key] for clip in batch},
        table.options.allow_row_failures,
        metadata.batch_metadata(computed.results, computed.reused, seconds, model),
    )


def _partition_events(batch, computed, shared, partition_keys, sharded: bool):
    """One materialization per clip partition, or per shard (with its clips' counts)."""
    if not sharded:
        for clip in batch:
            key, result = computed.keys.get(clip.clip_key), computed.results[clip.clip_key]
            yield shared.event(
                clip.partition_key,
                clip_events.clip_version(clip, key, result),
                clip_events.clip_metadata(clip, key, result, shared),
            )
        return
    by_shard: dict[str, list] = {shard: [] for shard in partition_keys}
    for clip in batch:
        by_shard[clip.shard].append(clip)
    for shard, clips in by_shard.items():
        results = [computed.results[clip.clip_key] for clip in clips]
        versions = [
            clip_events.clip_version(clip, computed.keys.get(clip.clip_key), result)
            for clip, result in zip(clips, results, strict=True)
        ]
        yield shared.event(
            shard,
            clip_events.shard_version(versions),
            metadata.shard_metadata(results, shared.model),
        )


def _results_store(config: MaterializeConfig, storage: TableStorage) -> ClipResultStore:
    """A shared store the manifest names by URL (PostgreSQL, shared with the CLI and other
    deployments), else the folder under the table's Dagster storage."""
    if results_store_scheme(config.results_store) is not None:
        return store_for(config)
    return ResultStore(storage.results)


def _enriched_table_asset(table: CorpusTable, keys: TableKeys) -> dg.AssetsDefinition:
    @dg.asset(
        key=keys.enriched_table,
        group_name=keys.group,
        deps=[keys.source_table, keys.clip_saliency],
        automation_condition=enriched_condition(),
        pool=MODEL_POOL,
        check_specs=checks.table_check_specs(keys.enriched_table),
        kinds={"jsonl" if table.spec.output.suffix.lower() == ".jsonl" else "parquet"},
        description=_unavailable_note(table)
        + f"The feature table with saliency columns, written to {table.spec.output}.",
        tags=_availability_tags(table),
    )
    def enriched_table(
        context: dg.AssetExecutionContext,
        decoder: FFmpegDecoder,
        model: SaliencyModelResource,
        ray: RayCluster,
    ) -> dg.MaterializeResult:
        config = effective_config(table, decoder, model, ray)
        chosen = model.choice(config)
        storage = TableStorage.for_table(table, context.instance)
        store = _results_store(config, storage)
        input_path = _existing(table.spec.input, "input table")
        run = materialize_table(input_path, table.spec.output, config, chosen, store=store)
        provenance = checks.run_provenance_for(table, run, context)
        if table.spec.audit_json is not None:
            write_audit(
                table.spec.audit_json,
                audit_record(
                    run,
                    table_id=table.table_id,
                    batch_manifest=str(table.manifest.path),
                    run_provenance=provenance,
                ),
            )
        samples = [row for row in run.outcome.rows if row.get(config.status_column) == OK]
        return dg.MaterializeResult(
            metadata=metadata.table_metadata(run, samples, config, chosen, storage.thumbnails),
            check_results=[
                checks.status_contract_result(run, table.options.allow_row_failures),
                checks.provenance_result(provenance),
            ],
            # The written table's content: a rerun that writes the same bytes keeps it.
            data_version=dg.DataVersion(sha256_file(table.spec.output)),
        )

    return enriched_table


def _unavailable_note(table: CorpusTable) -> str:
    """Said first on every asset of a table whose input is not on this machine (checked when
    the code location loads), so "0 partitions" never reads as a healthy empty corpus."""
    if filesystems.is_file(table.spec.input):
        return ""
    return f"**Unavailable on this machine**: the input table {table.spec.input} does not exist. "


def _availability_tags(table: CorpusTable) -> dict[str, str]:
    return {"availability": "available" if filesystems.is_file(table.spec.input) else "unavailable"}


def _existing(path: Path, what: str) -> Path:
    """``path`` when the file (or ``s3://`` object) is there, else a failure saying so."""
    if not filesystems.is_file(path):
        raise dg.Failure(
            description=f"{what} {filesystems.display(path)} does not exist on this machine; "
            "check the manifest's input/root paths or mount the corpus",
        )
    return Path(path)
