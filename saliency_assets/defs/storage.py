"""Where a table's Dagster-side files live: its clip index and its results store.

Under the instance's storage folder by default (``<storage>/saliency/<table>/``), or under the
folder the manifest's ``dagster.storage`` key names (relative to the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from saliency_assets.defs.corpora import CorpusTable


@dataclass(frozen=True)
class TableStorage:
    root: Path

    @property
    def clip_index(self) -> Path:
        return self.root / "clips.parquet"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def thumbnails(self) -> Path:
        return self.root / "thumbnails"

    @classmethod
    def for_table(cls, table: CorpusTable, instance: dg.DagsterInstance) -> TableStorage:
        if table.options.storage:
            base = Path(table.options.storage)
            if not base.is_absolute():
                base = table.manifest.base_dir / base
        else:
            base = Path(instance.storage_directory()) / "saliency"
        return cls(base / table.name)
