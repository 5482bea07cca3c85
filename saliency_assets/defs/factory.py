"""One manifest table in, one set of Dagster definitions out.

``saliency/<table>/source_table`` reads the raw feature table and registers the clip partitions;
``saliency/<table>/clip_saliency`` computes a batch of clips per run through the core engine and
persists each result in the table's results store; ``saliency/<table>/enriched_table`` joins the
results back onto every row and writes the output table and its audit exactly as the CLI does.

A table that names several models gets one clip asset per model,
``saliency/<table>/clip_saliency_<model id>``, on the same clip partitions (and the same results
store: a result's key holds the model's sha256), an enriched table carrying every model's
columns, and ``saliency/<table>/model_comparison``: how each pair of models agrees, clip by clip.
"""

import dataclasses
import time
import warnings
from pathlib import Path

import dagster as dg

from saliency_assets.core.contract.config import MaterializeConfig, results_store_scheme
from saliency_assets.core.contract.model_comparison import compare_models
from saliency_assets.core.contract.model_sets import TableModel
from saliency_assets.core.model.saliency_model import sha256_file
from saliency_assets.core.run.engine import compute_clips
from saliency_assets.core.run.results_store import (
    ClipResultStore,
    ResultStore,
    settings_digest,
    store_for,
)
from saliency_assets.core.run.table_run import materialize_models, table_audit_record, write_audit
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
    table_clips,
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
        *(_clip_saliency_asset(table, keys, partitions, model) for model in table.spec.models),
        _enriched_table_asset(table, keys),
    ]
    if keys.comparisons:  # several models
        assets.append(_model_comparison_asset(table, keys))
    coverage = checks.coverage_check(table, keys.enriched_table, keys.clip_assets)
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
        models = table.spec.models
        self.source_table = dg.AssetKey([*prefix, "source_table"])
        # One model: clip_saliency, as ever; several: clip_saliency_<model name> each.
        self.clip_saliency_by_model = {
            model.model_id: dg.AssetKey(
                [*prefix, "clip_saliency" if len(models) == 1 else f"clip_saliency_{model.name}"]
            )
            for model in models
        }
        self.clip_assets = list(self.clip_saliency_by_model.values())
        self.enriched_table = dg.AssetKey([*prefix, "enriched_table"])
        self.comparisons = [dg.AssetKey([*prefix, "model_comparison"])] if len(models) > 1 else []
        self.group = f"saliency_{table.name}"


def effective_config(
    table: CorpusTable,
    decoder: FFmpegDecoder,
    model: SaliencyModelResource,
    ray: RayCluster,
    table_model: TableModel | None = None,
) -> MaterializeConfig:
    """The manifest config (of ``table_model``, one of the table's models; default: its only
    one) with the run's decoder, model and cluster overrides applied. A table of several models
    takes its models from the manifest: a model override would make them all one model."""
    several = len(table.spec.models) > 1
    if several and (model.model_path or model.model_id):
        raise dg.Failure(
            description=f"table {table.table_id!r} compares {len(table.spec.models)} models "
            "named in its manifest; unset the model resource's model_path/model_id, which "
            "would replace every one of them"
        )
    config = (table_model or table.spec.models[0]).config
    return ray.apply(model.apply(decoder.apply(config)))


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
        clips = index_clips(table, table_clips(table, rows))
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


def _clip_saliency_asset(
    table: CorpusTable, keys: TableKeys, partitions, table_model: TableModel
) -> dg.AssetsDefinition:
    asset_key = keys.clip_saliency_by_model[table_model.model_id]
    several = len(keys.clip_assets) > 1
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
        asset_key,
        group_name=keys.group,
        partitions_def=partitions,
        automation_condition=clip_condition(),
        skippable=True,
        code_version=CLIP_CODE_VERSION,
        kinds={"onnx", "ffmpeg"},
        tags=_availability_tags(table),
        description=_unavailable_note(table)
        + (f"Model {table_model.model_id}: " if several else "")
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
        config = effective_config(table, decoder, model, ray, table_model)
        yield from compute_clip_batch(table, context, config, model, asset_key)

    # backfill_policy= is a BetaWarning in 1.13; the multi-run policy is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        decorate = dg.multi_asset(
            name=f"saliency_{table.name}_clip_saliency"
            + (f"_{table_model.name}" if several else ""),
            specs=[spec],
            partitions_def=partitions,
            backfill_policy=policy,
            pool=MODEL_POOL,
            check_specs=[checks.batch_status_spec(asset_key)],
        )
        return decorate(clip_saliency)


def compute_clip_batch(
    table: CorpusTable,
    context: dg.AssetExecutionContext,
    config: MaterializeConfig,
    model_resource: SaliencyModelResource,
    asset_key: dg.AssetKey,
):
    """Compute the run's clip partitions (a key, a range, or shards) into the results store,
    then log each partition's own materialization (of ``asset_key``, the model's clip asset)
    and the batch's status check."""
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
    shared = clip_events.BatchContext(asset_key, model, settings_digest(config), CLIP_CODE_VERSION)
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
        deps=[keys.source_table, *keys.clip_assets],
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
        models = [
            dataclasses.replace(
                table_model, config=effective_config(table, decoder, model, ray, table_model)
            )
            for table_model in table.spec.models
        ]
        chosen = [(table_model, model.choice(table_model.config)) for table_model in models]
        storage = TableStorage.for_table(table, context.instance)
        store = _results_store(models[0].config, storage)
        input_path = _existing(table.spec.input, "input table")
        runs = materialize_models(input_path, table.spec.output, chosen, store=store)
        provenance = checks.run_provenance_for(table, runs, context)
        if table.spec.audit_json is not None:
            write_audit(
                table.spec.audit_json,
                table_audit_record(
                    runs,
                    table_id=table.table_id,
                    batch_manifest=str(table.manifest.path),
                    run_provenance=provenance,
                ),
            )
        return dg.MaterializeResult(
            metadata=metadata.table_metadata(runs, storage.thumbnails),
            check_results=[
                checks.status_contract_result(runs, table.options.allow_row_failures),
                checks.provenance_result(provenance),
            ],
            # The written table's content: a rerun that writes the same bytes keeps it.
            data_version=dg.DataVersion(sha256_file(table.spec.output)),
        )

    return enriched_table


def _model_comparison_asset(table: CorpusTable, keys: TableKeys) -> dg.AssetsDefinition:
    models = table.spec.models
    ids = ", ".join(model.model_id for model in models)

    @dg.asset(
        key=keys.comparisons[0],
        group_name=keys.group,
        deps=[keys.enriched_table],
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"python"},
        description=_unavailable_note(table)
        + f"How each pair of the models {ids} agrees, clip by clip (one row per clip of the "
        "enriched table, where both have a finite value): Pearson and Spearman correlation of "
        "saliency_mean and saliency_var, and a scatter plot of saliency_mean.",
        tags=_availability_tags(table),
    )
    def model_comparison() -> dg.MaterializeResult:
        path_column = table.spec.config.path_column
        columns = {path_column} | {
            column for model in models for column in (model.values.mean, model.values.var)
        }
        output = _existing(table.spec.output, "enriched table")
        rows = read_table(output, row_columns=columns).rows
        pairs = compare_models(rows, path_column, [(m.model_id, m.values) for m in models])
        return dg.MaterializeResult(metadata=metadata.comparison_metadata(pairs))

    return model_comparison


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
