"""Each clip partition's own materialization: its status, value, error and data version.

A ranged run materializes many partitions in one step, and Dagster would give them all the
batch's metadata and one data version. So the step logs one materialization per partition
itself, carrying that clip's numbers and, as its data version, a digest of the clip's result key
(clip bytes, model, settings): a rerun with nothing changed keeps every version, and a changed
clip, model or setting changes exactly the versions it affects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, generate_event_batch_id

from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.results_store import ResultKey
from saliency_assets.defs.partitions import IndexedClip

# Dagster's provenance tags on a materialization (dagster._core.definitions.data_version): what
# the framework writes itself when it logs a materialization, and what staleness reads.
DATA_VERSION_TAG = "dagster/data_version"
USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
CODE_VERSION_TAG = "dagster/code_version"


@dataclass(frozen=True)
class BatchContext:
    """What every partition event of one run shares."""

    asset_key: dg.AssetKey
    model: ModelChoice
    settings_digest: str
    code_version: str

    def event(self, partition: str, version: str, metadata: dict[str, Any]):
        tags = {
            DATA_VERSION_TAG: version,
            USER_PROVIDED_TAG: "true",
            CODE_VERSION_TAG: self.code_version,
        }
        return dg.AssetMaterialization(
            self.asset_key, partition=partition, metadata=metadata, tags=tags
        )


def batched(context: dg.AssetExecutionContext, materializations: list[dg.AssetMaterialization]):
    """The materializations as one event batch, as Dagster writes the ones it emits itself: with
    ``DAGSTER_EVENT_BATCH_SIZE`` set, PostgreSQL stores them in a few inserts instead of one per
    partition. (Public ``context.log_event`` would write each one alone; the step context and
    the batch marker are Dagster internals, pinned with dagster==1.13.27.)"""
    step = context.op_execution_context._step_execution_context
    batch_id, last = generate_event_batch_id(), len(materializations) - 1
    for index, materialization in enumerate(materializations):
        marker = DagsterEventBatchMetadata(batch_id, index == last)
        yield DagsterEvent.asset_materialization(step, materialization, marker)


def clip_version(clip: IndexedClip, key: ResultKey | None, result: ClipResult) -> str:
    """The result key's digest; a clip unreadable now has no key, so its failure is hashed."""
    if key is not None:
        return key.digest()
    text = "\0".join((clip.clip_key, result.status, result.detail or ""))
    return "unreadable-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def clip_metadata(
    clip: IndexedClip, key: ResultKey | None, result: ClipResult, batch: BatchContext
) -> dict[str, Any]:
    """What the clip's partition page shows: its own status, value, error and provenance."""
    metadata: dict[str, Any] = {
        "status": result.status,
        "clip_path": dg.MetadataValue.path(str(clip.source.path)),
        "frames_used": result.frames_used,
        "source_fingerprint": key.source_fingerprint if key else "",
        "model_id": batch.model.model_id,
        "model_sha256": batch.model.sha256,
        "settings_digest": batch.settings_digest,
    }
    if result.ok:
        metadata["saliency_mean"] = dg.MetadataValue.float(float(result.saliency_mean))
        metadata["saliency_var"] = dg.MetadataValue.float(float(result.saliency_var))
    else:
        metadata["error"] = result.detail or result.status
    return metadata


def shard_version(versions: list[str]) -> str:
    """A shard's version: a digest of its clips' versions, in clip order."""
    return hashlib.sha256("\n".join(versions).encode("utf-8")).hexdigest()[:24]
