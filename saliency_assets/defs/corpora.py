"""Which corpus tables the code location serves: every table of every manifest.

``$SALIENCY_ASSETS_MANIFESTS`` (a manifest file or a folder of them) replaces the default
``manifests/`` folder. Loading never touches a corpus's files, so a corpus that is absent on
this machine still has its assets; they fail with a clear message when run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.manifests import Manifest, TableSpec, load_manifest

MANIFESTS_ENV = "SALIENCY_ASSETS_MANIFESTS"
DEFAULT_MANIFESTS_DIR = Path(__file__).resolve().parents[2] / "manifests"
DEFAULT_CLIPS_PER_RUN = 500
DEFAULT_SHARDS = 512
DEFAULT_SENSOR_INTERVAL_S = 300
PARTITIONINGS = ("clips", "shards")


@dataclass(frozen=True)
class DagsterOptions:
    """A table's optional ``dagster`` manifest keys."""

    refresh_cron: str | None = None
    clips_per_run: int = DEFAULT_CLIPS_PER_RUN  # partitions per run: clips, or shards
    partitioning: str = "clips"
    shards: int = DEFAULT_SHARDS
    allow_row_failures: bool = False
    storage: str | None = None
    sensor_interval_s: int = DEFAULT_SENSOR_INTERVAL_S
    automation: bool = False  # start the clip sensor and the automation sensor as RUNNING


@dataclass(frozen=True)
class CorpusTable:
    manifest: Manifest
    spec: TableSpec
    options: DagsterOptions

    @property
    def table_id(self) -> str:
        return self.spec.table_id

    @property
    def name(self) -> str:
        """The table id as a Dagster name (letters, digits, underscores)."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.table_id)


def manifest_paths() -> list[Path]:
    configured = os.environ.get(MANIFESTS_ENV)
    location = Path(configured) if configured else DEFAULT_MANIFESTS_DIR
    if location.is_dir():
        return sorted(location.glob("*.json"))
    if location.is_file():
        return [location]
    raise FileNotFoundError(f"{MANIFESTS_ENV}={location} is neither a manifest file nor a folder")


def load_corpus_tables() -> list[CorpusTable]:
    """Every table of every manifest; a table id may appear in one manifest only."""
    tables: dict[str, CorpusTable] = {}
    for path in manifest_paths():
        manifest = load_manifest(path)
        for spec in manifest.tables:
            if spec.table_id in tables:
                raise ValueError(f"table id {spec.table_id!r} appears in two manifests ({path})")
            tables[spec.table_id] = CorpusTable(manifest, spec, parse_options(spec))
    return list(tables.values())


def parse_options(spec: TableSpec) -> DagsterOptions:
    values: dict[str, Any] = dict(spec.options)
    where = f"table {spec.table_id!r} dagster options"
    unknown = sorted(set(values) - set(DagsterOptions.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    options = DagsterOptions(**values)
    if not isinstance(options.automation, bool):
        raise ValueError(f"{where}: automation must be true or false")
    if options.partitioning not in PARTITIONINGS:
        raise ValueError(f"{where}: partitioning must be one of {PARTITIONINGS}")
    for name in ("clips_per_run", "shards", "sensor_interval_s"):
        value = getattr(options, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{where}: {name} must be a non-negative integer")
    return options
