"""One manifest table in, one set of Dagster definitions out.

``saliency/<table>/source_table`` reads the raw feature table and registers the clip partitions;
``saliency/<table>/clip_saliency`` computes a batch of clips per run through the core engine and
persists each result in the table's results store; ``saliency/<table>/enriched_table`` joins the
results back onto every row and writes the output table and its audit exactly as the CLI does.
"""

import time
import warnings
from collections import Counter
from pathlib import Path

import dagster as dg

from saliency_assets.core.config import MaterializeConfig
from saliency_assets.core.engine import compute_clips, unique_clips
from saliency_assets.core.model import sha256_file
from saliency_assets.core.results_store import ResultStore
from saliency_assets.core.statuses import OK
from saliency_assets.core.table_run import audit_record, materialize_table, write_audit
from saliency_assets.core.tables import read_table
from saliency_assets.defs import checks, metadata
from saliency_assets.defs.corpora import CorpusTable
from saliency_assets.defs.partitions import (
    clips_for_partitions,
    current_clip_index,
    index_clips,
    partitions_def,
    register_partitions,
    write_clip_index,
)
from saliency_assets.defs.resources import (
    FFmpegDecoder,
    RayCluster,
    SaliencyModelResource,
    table_resources,
)
from saliency_assets.defs.storage import TableStorage

MODEL_POOL = "saliency_model"


def corpus_table_defs(table: CorpusTable) -> dg.Definitions:
    """Assets, checks, jobs, sensor and schedule for one corpus table."""
    from saliency_assets.defs.automation import table_automation

    keys = TableKeys(table)
    partitions = partitions_def(table)
    decoder, model = table_resources(table.spec.config)
    assets = [
        _source_table_asset(table, keys, partitions),
        _clip_saliency_asset(table, keys, partitions),
        _enriched_table_asset(table, keys),
    ]
    jobs, sensors, schedules = table_automation(table, keys, partitions)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        sensors=sensors,
        schedules=schedules,
        resources={
            keys.decoder_resource: decoder,
            keys.model_resource: model,
            keys.ray_resource: RayCluster(address=table.spec.config.ray_address),
        },
    )


class TableKeys:
    """The names one table's definitions are known by."""

    def __init__(self, table: CorpusTable) -> None:
        prefix = ["saliency", table.table_id]
        self.source_table = dg.AssetKey([*prefix, "source_table"])
        self.clip_saliency = dg.AssetKey([*prefix, "clip_saliency"])
        self.enriched_table = dg.AssetKey([*prefix, "enriched_table"])
        self.group = f"saliency_{table.name}"
        self.decoder_resource = f"ffmpeg_decoder_{table.name}"
        self.model_resource = f"saliency_model_{table.name}"
        self.ray_resource = f"ray_cluster_{table.name}"
        self.resources = {self.decoder_resource, self.model_resource, self.ray_resource}


def effective_config(table: CorpusTable, context: dg.AssetExecutionContext) -> MaterializeConfig:
    """The manifest config with the run's decoder, model and cluster resource settings applied."""
    keys = TableKeys(table)
    decoder: FFmpegDecoder = getattr(context.resources, keys.decoder_resource)
    model: SaliencyModelResource = getattr(context.resources, keys.model_resource)
    cluster: RayCluster = getattr(context.resources, keys.ray_resource)
    return cluster.apply(model.apply(decoder.apply(table.spec.config)))


def _source_table_asset(table: CorpusTable, keys: TableKeys, partitions) -> dg.AssetsDefinition:
    @dg.asset(
        key=keys.source_table,
        group_name=keys.group,
        kinds={"jsonl" if table.spec.input.suffix.lower() == ".jsonl" else "parquet"},
        description=f"The raw feature table {table.spec.input}, read and indexed by clip.",
    )
    def source_table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        storage = TableStorage.for_table(table, context.instance)
        rows = read_table(_existing(table.spec.input, "input table")).rows
        clips = index_clips(table, unique_clips(rows, table.spec.config))
        write_clip_index(storage.clip_index, clips)
        new = 0
        if isinstance(partitions, dg.DynamicPartitionsDefinition):
            new = register_partitions(
                context.instance, partitions.name, [c.partition_key for c in clips]
            )
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(table.spec.input)),
                "sha256": sha256_file(table.spec.input),
                "rows": len(rows),
                "unique_clips": len(clips),
                "new_partitions": new,
                "dagster/row_count": len(rows),
            }
        )

    return source_table


def _clip_saliency_asset(table: CorpusTable, keys: TableKeys, partitions) -> dg.AssetsDefinition:
    per_run = table.options.clips_per_run
    policy = (
        dg.BackfillPolicy.multi_run(max_partitions_per_run=per_run)
        if per_run
        else dg.BackfillPolicy.single_run()
    )

    def clip_saliency(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return compute_clip_batch(table, context)

    # backfill_policy= on @asset is a BetaWarning in 1.13; the multi-run policy is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        decorate = dg.asset(
            key=keys.clip_saliency,
            group_name=keys.group,
            deps=[keys.source_table],
            partitions_def=partitions,
            backfill_policy=policy,
            pool=MODEL_POOL,
            required_resource_keys=keys.resources,
            check_specs=[checks.batch_status_spec(keys.clip_saliency)],
            kinds={"onnx", "ffmpeg"},
            description="Per-clip saliency, computed in batches and kept in the results store.",
        )
        return decorate(clip_saliency)


def compute_clip_batch(
    table: CorpusTable, context: dg.AssetExecutionContext
) -> dg.MaterializeResult:
    """Compute the run's clip partitions (a key, a range, or shards) into the results store."""
    keys = TableKeys(table)
    config = effective_config(table, context)
    model = getattr(context.resources, keys.model_resource).choice
    storage = TableStorage.for_table(table, context.instance)
    sharded = table.options.partitioning == "shards"
    _existing(table.spec.input, "input table")
    partition_keys = context.partition_keys
    indexed = current_clip_index(table, storage.clip_index, partition_keys, sharded)
    batch = clips_for_partitions(indexed, partition_keys, sharded)
    started = time.monotonic()
    computed = compute_clips(
        {clip.clip_key: clip.source for clip in batch},
        config,
        model,
        store=ResultStore(storage.results),
    )
    seconds = time.monotonic() - started
    statuses = Counter(result.status for result in computed.results.values())
    partition_of = {clip.clip_key: clip.partition_key for clip in batch}
    failures = {
        partition_of[key]: result.detail or result.status
        for key, result in computed.results.items()
        if not result.ok
    }
    return dg.MaterializeResult(
        metadata=metadata.batch_metadata(statuses, computed.reused, seconds, model),
        check_results=[
            checks.batch_status_result(statuses, failures, table.options.allow_row_failures)
        ],
    )


def _enriched_table_asset(table: CorpusTable, keys: TableKeys) -> dg.AssetsDefinition:
    @dg.asset(
        key=keys.enriched_table,
        group_name=keys.group,
        deps=[keys.clip_saliency],
        pool=MODEL_POOL,
        required_resource_keys=keys.resources,
        check_specs=checks.table_check_specs(keys.enriched_table),
        kinds={"jsonl" if table.spec.output.suffix.lower() == ".jsonl" else "parquet"},
        description=f"The feature table with saliency columns, written to {table.spec.output}.",
    )
    def enriched_table(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        config = effective_config(table, context)
        model = getattr(context.resources, keys.model_resource).choice
        storage = TableStorage.for_table(table, context.instance)
        store = ResultStore(storage.results)
        input_path = _existing(table.spec.input, "input table")
        coverage = checks.coverage_of(read_table(input_path).rows, config, model, store)
        run = materialize_table(input_path, table.spec.output, config, model, store=store)
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
            metadata=metadata.table_metadata(run, samples, config, model),
            check_results=[
                checks.status_contract_result(run, table.options.allow_row_failures),
                checks.provenance_result(provenance),
                checks.coverage_result(coverage),
            ],
        )

    return enriched_table


def _existing(path: Path, what: str) -> Path:
    if not Path(path).is_file():
        raise dg.Failure(
            description=f"{what} {path} does not exist on this machine; check the manifest's "
            "input/root paths or mount the corpus",
        )
    return Path(path)
