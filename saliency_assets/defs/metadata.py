"""Metadata people would rather look at than read: counts, throughput, a histogram, thumbnails."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.images import encode_png, heatmap_thumbnail, histogram_svg
from saliency_assets.core.contract.model_comparison import ModelPair
from saliency_assets.core.contract.model_sets import COLUMN_SEPARATOR
from saliency_assets.core.contract.statuses import OK
from saliency_assets.core.model.clip_saliency import ClipJob, ClipResult, clip_map
from saliency_assets.core.model.saliency_model import ModelChoice, SaliencyModel
from saliency_assets.core.run.results_store import result_keys
from saliency_assets.core.run.table_run import TableRun, combined_summary
from saliency_assets.core.tables.rows import MEAN_COLUMN
from saliency_assets.core.tables.sources import Unresolved, clip_key, resolve_clip
from saliency_assets.core.tables.table_files import atomic_write

THUMBNAIL_CLIPS = 3
HISTOGRAM_BINS = 20


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


def table_metadata(runs: list[TableRun], thumbnails: Path) -> dict[str, Any]:
    """The written table (its counters over every model), and each model's figures, histogram
    and thumbnails: under their usual names with one model, ``<name>__<model id>`` with
    several."""
    first = runs[0]
    summary = combined_summary(runs).to_json()
    failed_share = summary["failed"] / summary["total"] if summary["total"] else 0.0
    shared = {
        "path": dg.MetadataValue.path(str(first.output)),
        "dagster/row_count": summary["total"],
        "dagster/column_schema": column_schema(first.outcome.rows),
        **summary,
        "failed_share": dg.MetadataValue.float(failed_share),
        "unique_clips": first.outcome.clips,
    }
    if len(runs) == 1:
        return {**shared, **model_table_metadata(first, thumbnails)}
    return {
        **shared,
        **{
            f"{name}{COLUMN_SEPARATOR}{run.model.model_id}": value
            for run in runs
            for name, value in model_table_metadata(run, thumbnails).items()
        },
    }


def model_table_metadata(run: TableRun, thumbnails: Path) -> dict[str, Any]:
    """One model's part of the table: its value figures, histogram and thumbnails."""
    config, model = run.config, run.model
    ok_rows = [row for row in run.outcome.rows if row.get(config.status_column) == OK]
    means = np.array([row[run.values.mean] for row in ok_rows], dtype=np.float64)
    return {
        **drift_figures(means),
        "model_id": model.model_id,
        "model_sha256": model.sha256,
        "saliency_mean_histogram": dg.MetadataValue.md(histogram_markdown(means)),
        "saliency_map_thumbnails": dg.MetadataValue.md(
            thumbnails_markdown(ok_rows, config, model, thumbnails, run.values.mean)
        ),
    }


def drift_figures(means: np.ndarray) -> dict[str, dg.MetadataValue]:
    """Floats, so the UI's Plots tab tracks them across materializations."""
    quantiles = np.quantile(means, [0.1, 0.5, 0.9]) if means.size else [0.0, 0.0, 0.0]
    figures = {
        "saliency_mean_mean": float(means.mean()) if means.size else 0.0,
        "saliency_mean_median": float(quantiles[1]),
        "saliency_mean_p10": float(quantiles[0]),
        "saliency_mean_p90": float(quantiles[2]),
    }
    return {name: dg.MetadataValue.float(value) for name, value in figures.items()}


def comparison_metadata(pairs: list[ModelPair]) -> dict[str, Any]:
    """Per pair of models, ``<a> vs <b>/<column>/{pearson,spearman,clips}`` (correlations as
    floats, for the Plots tab; left out when undefined) and a scatter plot of saliency_mean."""
    metadata: dict[str, Any] = {"pairs": len(pairs)}
    for pair in pairs:
        for column, agreement in pair.agreements.items():
            prefix = f"{pair.label}/{column}"
            metadata[f"{prefix}/clips"] = agreement.clips
            for name in ("pearson", "spearman"):
                value = getattr(agreement, name)
                if value is not None:
                    metadata[f"{prefix}/{name}"] = dg.MetadataValue.float(value)
        svg = base64.b64encode(pair.scatter_svg().encode("utf-8")).decode("ascii")
        metadata[f"{pair.label}/scatter"] = dg.MetadataValue.md(
            f"![{pair.label}](data:image/svg+xml;base64,{svg})\n\n"
            f"{pair.agreements[MEAN_COLUMN].clips} clips with both values"
        )
    return metadata


def column_schema(rows: list[dict[str, Any]]) -> dg.TableSchema:
    """The written table's columns, in order, with the type of their first non-null value."""
    types: dict[str, str] = {}
    for row in rows:
        for name, value in row.items():
            if types.get(name, "null") == "null":
                types[name] = "null" if value is None else type(value).__name__
    return dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in types.items()])


def histogram_markdown(values: np.ndarray) -> str:
    """A bar chart of saliency_mean over [0, 1] with labelled axes, and the counts below it."""
    if values.size == 0:
        return "_no ok rows_"
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    svg = base64.b64encode(histogram_svg(counts).encode("utf-8")).decode("ascii")
    lines = [
        f"![saliency_mean histogram](data:image/svg+xml;base64,{svg})",
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
    ok_rows: list[dict[str, Any]],
    config: MaterializeConfig,
    model: ModelChoice,
    cache: Path,
    mean_column: str = MEAN_COLUMN,
) -> str:
    """Temporally reduced saliency maps of a few sample clips, with their values. Each map is
    made once per clip result (cached under the result key's digest), not on every run."""
    samples = _sample_clips(ok_rows, config, mean_column)
    if not samples:
        return "_no ok clips_"
    renderer = _MapRenderer(config, model)
    lines = []
    for source, value in samples:
        png = _cached_thumbnail(cache, source, config, model, renderer)
        if not png:
            continue
        encoded = base64.b64encode(png).decode("ascii")
        lines += [
            f"**{source.path.name}**: saliency_mean = {value:.4f}",
            "",
            f"![{source.path.name}](data:image/png;base64,{encoded})",
            "",
        ]
    return "\n".join(lines)


class _MapRenderer:
    """Loads the model session only if some thumbnail is not cached yet."""

    def __init__(self, config: MaterializeConfig, model: ModelChoice) -> None:
        self.config, self.model, self._session = config, model, None

    def png(self, source) -> bytes:
        if self._session is None:
            self._session = SaliencyModel(self.model.path, self.config.providers)
        job = ClipJob.from_config(self.config, self.model.path)
        return encode_png(heatmap_thumbnail(clip_map(source, job, self._session)))


def _cached_thumbnail(cache: Path, source, config, model: ModelChoice, renderer) -> bytes:
    keys = result_keys({clip_key(source): source}, config, model.sha256)
    if not keys:  # unreadable now: no thumbnail rather than a failed table
        return b""
    path = cache / f"{next(iter(keys.values())).digest()}.png"
    if path.is_file():
        return path.read_bytes()
    png = renderer.png(source)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(png))
    return png


def _sample_clips(
    ok_rows: list[dict[str, Any]], config: MaterializeConfig, mean_column: str
) -> list:
    samples = {}
    for row in ok_rows:
        source = resolve_clip(row, config)
        if not isinstance(source, Unresolved):
            samples.setdefault(str(source.path), (source, float(row[mean_column])))
        if len(samples) == THUMBNAIL_CLIPS:
            break
    return list(samples.values())
