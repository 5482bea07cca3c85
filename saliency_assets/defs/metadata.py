"""Metadata people would rather look at than read: counts, throughput, a histogram, thumbnails."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from typing import Any

import dagster as dg
import numpy as np

from saliency_assets.core.clip_saliency import ClipJob, ClipResult, clip_map
from saliency_assets.core.config import MaterializeConfig
from saliency_assets.core.images import encode_png, heatmap_thumbnail, histogram_image
from saliency_assets.core.model import ModelChoice, SaliencyModel
from saliency_assets.core.rows import MEAN_COLUMN
from saliency_assets.core.sources import Unresolved, resolve_clip
from saliency_assets.core.table_run import TableRun

THUMBNAIL_CLIPS = 3


def batch_metadata(
    results: dict[str, ClipResult], reused: int, seconds: float, model: ModelChoice
) -> dict[str, Any]:
    """The run's batch as a whole (on its status check; each partition carries its own clip)."""
    computed = len(results) - reused
    return {
        "clips": len(results),
        "computed_clips": computed,
        "reused_clips": reused,
        "seconds": round(seconds, 3),
        "computed_clips_per_second": round(computed / seconds, 3) if seconds > 0 else 0.0,
        "model_id": model.model_id,
        "model_sha256": model.sha256,
        **status_counts(results.values()),
    }


def shard_metadata(results: list[ClipResult], model: ModelChoice) -> dict[str, Any]:
    """A shard's partition page: its clips' counts and the mean of their values."""
    means = [result.saliency_mean for result in results if result.ok]
    return {
        "clips": len(results),
        "saliency_mean_of_clips": dg.MetadataValue.float(float(np.mean(means)) if means else 0.0),
        "model_id": model.model_id,
        "model_sha256": model.sha256,
        **status_counts(results),
    }


def status_counts(results: Iterable[ClipResult]) -> dict[str, int]:
    statuses = Counter(result.status for result in results)
    return {f"status/{status}": count for status, count in sorted(statuses.items())}


def table_metadata(
    run: TableRun, ok_rows: list[dict[str, Any]], config: MaterializeConfig, model: ModelChoice
) -> dict[str, Any]:
    means = np.array([row[MEAN_COLUMN] for row in ok_rows], dtype=np.float64)
    return {
        "path": dg.MetadataValue.path(str(run.output)),
        "dagster/row_count": run.summary["total"],
        **run.summary,
        "unique_clips": run.outcome.clips,
        "model_id": model.model_id,
        "model_sha256": model.sha256,
        "saliency_mean_histogram": dg.MetadataValue.md(histogram_markdown(means)),
        "saliency_map_thumbnails": dg.MetadataValue.md(thumbnails_markdown(ok_rows, config, model)),
    }


def histogram_markdown(values: np.ndarray) -> str:
    """A bar-chart image of saliency_mean over [0, 1] with the counts as a table below it."""
    if values.size == 0:
        return "_no ok rows_"
    image, counts, edges = histogram_image(values)
    lines = [
        _image_markdown("saliency_mean histogram", image),
        "",
        f"n = {values.size}, mean = {values.mean():.4f}, median = {np.median(values):.4f}",
        "",
        "| saliency_mean | rows |",
        "| --- | ---: |",
    ]
    lines += [
        f"| {low:.2f}–{high:.2f} | {count} |"
        for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True)
        if count
    ]
    return "\n".join(lines)


def thumbnails_markdown(
    ok_rows: list[dict[str, Any]], config: MaterializeConfig, model: ModelChoice
) -> str:
    """Temporally reduced saliency maps of a few sample clips, as small heat maps."""
    sources = _sample_sources(ok_rows, config)
    if not sources:
        return "_no ok clips_"
    session = SaliencyModel(model.path, config.providers)
    job = ClipJob.from_config(config, model.path)
    lines = []
    for source in sources:
        saliency = clip_map(source, job, session)
        height, width = saliency.shape
        lines += [
            f"**{source.path.name}** ({width}×{height})",
            "",
            _image_markdown(source.path.name, heatmap_thumbnail(saliency)),
            "",
        ]
    return "\n".join(lines)


def _sample_sources(ok_rows: list[dict[str, Any]], config: MaterializeConfig) -> list:
    sources = {}
    for row in ok_rows:
        source = resolve_clip(row, config)
        if not isinstance(source, Unresolved):
            sources.setdefault(str(source.path), source)
        if len(sources) == THUMBNAIL_CLIPS:
            break
    return list(sources.values())


def _image_markdown(alt: str, image: np.ndarray) -> str:
    encoded = base64.b64encode(encode_png(image)).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"
