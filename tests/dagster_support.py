"""Helpers for Dagster tests: a manifest over real generated clips and its definitions."""

import json
from pathlib import Path

import dagster as dg
from support.clips import make_clip

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def write_corpus(folder: Path, clip_names=("a.mp4", "b.mp4", "c.mp4"), missing=()) -> Path:
    """Real clips under folder/clips and a per-frame table naming them (plus missing ones)."""
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, name in enumerate(clip_names):
        if not (clips / name).exists():
            make_clip(clips / name, 64 + 16 * index, 48, 4)
        rows += [{"src": name, "frame": frame} for frame in range(2)]
    rows += [{"src": name, "frame": 0} for name in missing]
    table = folder / "features.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return table


def write_manifest(folder: Path, table_id="t", dagster_options=None, **config) -> Path:
    manifest = folder / "manifest.json"
    entry = {
        "id": table_id,
        "input": "features.jsonl",
        "output": "out/features.saliency.jsonl",
        "audit_json": "out/audit.json",
        "root": "clips",
        "max_frames": 2,
        "dagster": {"clips_per_run": 2, **(dagster_options or {})},
        **config,
    }
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


def load_defs(monkeypatch, manifest: Path) -> dg.Definitions:
    monkeypatch.setenv("SALIENCY_ASSETS_MANIFESTS", str(manifest))
    from saliency_assets.definitions import build_definitions

    return build_definitions()


def run_job(defs, name, instance, tags=None, raise_on_error=True):
    job = defs.resolve_job_def(name)
    return job.execute_in_process(instance=instance, tags=tags or {}, raise_on_error=raise_on_error)


def range_tags(start: str, end: str) -> dict:
    return {RANGE_START: start, RANGE_END: end}


def materialization_metadata(result, key: str) -> dict:
    events = [
        event
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == key
    ]
    return {name: value.value for name, value in events[-1].materialization.metadata.items()}


def check_evaluation(result, check_name: str):
    """The run's (last) evaluation of ``check_name``."""
    return [e for e in result.get_asset_check_evaluations() if e.check_name == check_name][-1]


def check_metadata(result, check_name: str) -> dict:
    evaluation = check_evaluation(result, check_name)
    return {name: value.value for name, value in evaluation.metadata.items()}


def partition_metadata(result, key: str) -> dict[str, dict]:
    """Each materialized partition of asset ``key`` in the run, with its own metadata."""
    return {
        event.partition: {
            name: value.value for name, value in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
        if event.asset_key.to_user_string() == key
    }
