"""Batch manifests: ``defaults`` plus ``tables``, in the reference tool's format.

Every key is type- and range-checked when the manifest is read, and every table's config is
built before any table runs, so a typo stops the batch (exit 2) instead of failing rows.
Relative paths are resolved against ``--base-dir`` or the manifest's folder, then normalised.

``models`` (ours), in ``defaults`` or a table: a list of ``{"model_path", "model_id"}`` objects,
each naming a model as the single-model keys do; with two or more, the table is enriched with
each of them, side by side (:mod:`.model_sets`). A table's own model keys win over the
defaults' ``models``, and its ``models`` over the defaults' model keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.config import (
    CONFIG_FIELDS,
    PATH_FIELDS,
    MaterializeConfig,
    config_from_mapping,
    results_store_scheme,
)
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.contract.model_sets import ModelRef, TableModel, table_models
from saliency_assets.core.contract.overwrites import (
    LabelledPath,
    config_inputs,
    config_stores,
    reject_overwrites,
)
from saliency_assets.core.tables.filesystems import is_object, object_uri
from saliency_assets.core.tables.table_files import parse_json_object, table_format

TABLE_KEYS = ("id", "input", "output", "audit_json", "target_column")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
# Per-table keys read by the Dagster layer; the batch command accepts and ignores them.
DAGSTER_TABLE_KEYS = ("dagster",)
MODELS_KEY = "models"
MODEL_KEYS = ("model_path", "model_id")


@dataclass(frozen=True)
class TableSpec:
    """One manifest table, resolved: where to read and write, and its effective config."""

    table_id: str
    input: Path
    output: Path
    audit_json: Path | None
    config: MaterializeConfig
    options: dict[str, Any]
    target_column: str | None = None  # the quality score the signal check correlates with
    # Every model the table is enriched with: one (today's columns) or several side by side.
    models: tuple[TableModel, ...] = ()


@dataclass(frozen=True)
class Manifest:
    path: Path
    base_dir: Path
    tables: list[TableSpec]


def load_manifest(path: Path, base_dir: Path | None = None) -> Manifest:
    """Read and validate a manifest; ConfigError names the entry and key that is wrong."""
    path = Path(path)
    document = _read_json(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    defaults = _defaults(document)
    entries = document.get("tables")
    if not isinstance(entries, list):
        raise ConfigError("manifest tables must be an array")
    tables = [_table(index, entry, defaults, base) for index, entry in enumerate(entries)]
    _reject_duplicates(tables)
    manifest = Manifest(path, base, tables)
    reject_manifest_overwrites(manifest)
    return manifest


def reject_manifest_overwrites(
    manifest: Manifest,
    model_paths: dict[str, list[Path]] | None = None,
    reports: list[LabelledPath] = (),
) -> None:
    """ConfigError when any table's output, audit or store, or a report, would write over the
    manifest, any table's input or models (``model_paths`` by table id, else the configured
    ``model_path`` of each), or another output. Chaining tables through a file is refused too:
    a rerun would overwrite the later table's input."""
    inputs: list[LabelledPath] = [("manifest", manifest.path)]
    outputs = list(reports)
    stores: dict[Path, str] = {}  # one check per folder, however many tables share it
    for table in manifest.tables:
        configured = [model.config.model_path for model in table.models]
        table_model_paths = (model_paths or {}).get(table.table_id, configured)
        table_inputs, table_outputs, table_stores = _table_files(table, table_model_paths)
        inputs += table_inputs
        outputs += table_outputs
        for label, store in table_stores:
            stores.setdefault(store, label)
    reject_overwrites(inputs, outputs, [(label, store) for store, label in stores.items()])


def _table_files(table: TableSpec, model_paths: list[Path | None]) -> tuple[list, list, list]:
    """The files one table reads, the files it writes, and its results store."""

    def name(key: str) -> str:
        return f"table {table.table_id!r} {key}"

    first, *others = model_paths or [None]
    inputs = [(name("input"), table.input), *config_inputs(table.config, first, name)]
    inputs += [(name("model_path"), Path(path)) for path in others if path is not None]
    outputs = [(name("output"), table.output), (name("audit_json"), table.audit_json)]
    return inputs, outputs, config_stores(table.config, name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if not path.is_file():  # a folder, a FIFO (reading it would block) or a device
            raise ConfigError(f"manifest {path} does not exist or is not a regular file")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ConfigError(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"manifest {path} cannot be read: {error}") from None
    return parse_json_object(text, f"manifest {path}", ConfigError)


def _defaults(document: dict[str, Any]) -> dict[str, Any]:
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("manifest defaults must be an object")
    unknown = sorted(set(defaults) - set(CONFIG_FIELDS) - set(DAGSTER_TABLE_KEYS) - {MODELS_KEY})
    if unknown:
        raise ConfigError(f"unknown default keys: {unknown}")
    return defaults


def _table(index: int, entry: Any, defaults: dict[str, Any], base: Path) -> TableSpec:
    where = f"table entry {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    allowed = set(CONFIG_FIELDS) | set(TABLE_KEYS) | set(DAGSTER_TABLE_KEYS) | {MODELS_KEY}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(f"unknown keys in {where}: {unknown}")
    table_id = str(entry.get("id") or "").strip()
    if not table_id:
        raise ConfigError(f"{where} is missing non-empty id")
    where = f"table {table_id!r} ({where})"
    models_value, defaults = _models_setting(defaults, entry, where)
    merged = {**defaults, **{k: v for k, v in entry.items() if k in CONFIG_FIELDS}}
    merged.pop("dagster", None)
    merged.pop(MODELS_KEY, None)
    for name in PATH_FIELDS:
        merged[name] = _resolved(merged.get(name), base, where, name)
    if _is_store_folder(merged.get("results_store")):
        merged["results_store"] = _resolved(merged["results_store"], base, where, "results_store")
    config = config_from_mapping(merged, where)
    models = table_models(config, _model_refs(models_value, base, where), where)
    if len(models) == 1:  # one model: the table's config is that model's, as without models
        config = models[0].config
    options = {**(defaults.get("dagster") or {}), **(entry.get("dagster") or {})}
    return TableSpec(
        table_id=table_id,
        input=_required_path(entry, "input", base, where),
        output=_required_path(entry, "output", base, where),
        audit_json=_optional_path(entry.get("audit_json"), base, where, "audit_json"),
        config=config,
        options=options,
        target_column=_target_column(entry.get("target_column"), where),
        models=models,
    )


def _models_setting(
    defaults: dict[str, Any], entry: dict[str, Any], where: str
) -> tuple[Any, dict[str, Any]]:
    """The ``models`` value that applies to the table (None: its single model), and the
    defaults without the model keys the table's own keys replace."""
    for keys, place in ((entry, where), (defaults, "manifest defaults")):
        if MODELS_KEY in keys and any(key in keys for key in MODEL_KEYS):
            raise ConfigError(
                f"{place}: give either models or model_path/model_id, not both (models names "
                "every model, each with its own model_path and model_id)"
            )
    if MODELS_KEY in entry:
        return entry[MODELS_KEY], {k: v for k, v in defaults.items() if k not in MODEL_KEYS}
    if any(key in entry for key in MODEL_KEYS):
        return None, {k: v for k, v in defaults.items() if k != MODELS_KEY}
    return defaults.get(MODELS_KEY), defaults


def _model_refs(value: Any, base: Path, where: str) -> list[ModelRef]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: models must be a non-empty list of objects, got {value!r}")
    return [_model_ref(item, number, base, where) for number, item in enumerate(value, start=1)]


def _model_ref(item: Any, number: int, base: Path, where: str) -> ModelRef:
    place = f"{where} models entry {number}"
    if not isinstance(item, dict) or not item:
        raise ConfigError(f"{place} must be an object with model_path and/or model_id")
    unknown = sorted(set(item) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"{place}: unknown keys {unknown} (use model_path, model_id)")
    model_id = item.get("model_id")
    if model_id is not None and (not isinstance(model_id, str) or not model_id.strip()):
        raise ConfigError(f"{place}: model_id must be a non-empty string, got {model_id!r}")
    path = _resolved(item.get("model_path"), base, place, "model_path")
    return ModelRef(None if path is None else Path(path), model_id)


def _target_column(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: target_column must be a non-empty column name, got {value!r}")
    return value


def _required_path(entry: dict[str, Any], key: str, base: Path, where: str) -> Path:
    value = entry.get(key)
    if not value:
        raise ConfigError(f"{where} is missing {key}")
    path = _optional_path(value, base, where, key)
    try:
        table_format(path)
    except ValueError:
        raise ConfigError(f"{where}: {key} {value!r} must end in .jsonl or .parquet") from None
    return path


def _optional_path(value: Any, base: Path, where: str, key: str) -> Path | None:
    resolved = _resolved(value, base, where, key)
    return None if resolved is None else Path(resolved)


def _resolved(value: Any, base: Path, where: str, key: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a path string, got {value!r}")
    if is_object(value):
        return object_uri(value)
    path = Path(value)
    return os.path.normpath(path if path.is_absolute() else base / path)


def _is_store_folder(value: Any) -> bool:
    """A ``results_store`` naming a folder (not a keyword, a URL or a value to reject)."""
    return (
        isinstance(value, str)
        and value not in ("", "default", "none")
        and results_store_scheme(value) is None
    )


def _reject_duplicates(tables: list[TableSpec]) -> None:
    """Ids are unique, and no two tables write the same file (output or audit)."""
    seen_ids: set[str] = set()
    written: dict[str, tuple[str, str]] = {}
    for table in tables:
        if table.table_id in seen_ids:
            raise ConfigError(f"duplicate table id {table.table_id!r}")
        seen_ids.add(table.table_id)
        for key in ("output", "audit_json"):
            path = getattr(table, key)
            if path is None:
                continue
            real = os.path.realpath(path)
            if real in written:
                raise ConfigError(_collision(written[real], (table.table_id, key), path))
            written[real] = (table.table_id, key)


def _collision(first: tuple[str, str], second: tuple[str, str], path: Path) -> str:
    (first_id, first_key), (second_id, second_key) = first, second
    if first_id == second_id:
        return f"table {first_id!r}: {first_key} and {second_key} are the same file {path}"
    return (
        f"tables {first_id!r} and {second_id!r} write the same output {path} "
        f"({first_key} and {second_key})"
    )
