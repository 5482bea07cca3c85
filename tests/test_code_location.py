"""The shipped code location loads, and its asset keys are pinned (a rename is a visible diff)."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
TABLES = ("bvi-dvc", "chug", "demo", "konvid-150k", "netflix-public", "youtube-ugc")
# A table of several models: a clip asset per model and the comparison of the models.
STUDENTS = "saliency/netflix-public-students"
EXPECTED_KEYS = sorted(
    [
        *(
            f"saliency/{table}/{asset}"
            for table in TABLES
            for asset in ("clip_saliency", "enriched_table", "source_table")
        ),
        f"{STUDENTS}/source_table",
        f"{STUDENTS}/clip_saliency_saliency_student_v1",
        f"{STUDENTS}/clip_saliency_saliency_student_v2",
        f"{STUDENTS}/enriched_table",
        f"{STUDENTS}/model_comparison",
    ]
)


@pytest.fixture(scope="module")
def shipped_defs() -> dg.Definitions:
    """The definitions of the shipped manifests, built once for the module's tests."""
    from saliency_assets.definitions import build_definitions

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SALIENCY_ASSETS_MANIFESTS", raising=False)
        return build_definitions()


def test_asset_keys_are_pinned(shipped_defs):
    defs = shipped_defs
    dg.Definitions.validate_loadable(defs)
    keys = sorted(key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == EXPECTED_KEYS


def test_every_table_has_its_checks_jobs_and_sensor(shipped_defs):
    defs = shipped_defs
    checks = {key.to_user_string() for key in defs.resolve_asset_graph().asset_check_keys}
    assert "saliency/demo/enriched_table:status_contract" in checks
    assert "saliency/demo/enriched_table:coverage" in checks
    assert "saliency/demo/clip_saliency:status_contract" in checks
    assert defs.resolve_sensor_def("saliency_konvid_150k_clip_sensor")
    assert defs.resolve_schedule_def("saliency_konvid_150k_refresh_schedule")


def test_every_shipped_corpus_has_one_partition_per_clip(shipped_defs):
    graph = shipped_defs.resolve_asset_graph()
    for table in TABLES:
        node = graph.get(dg.AssetKey(["saliency", table, "clip_saliency"]))
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition), table


def test_dagster_definitions_validate_passes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "DAGSTER_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shipped_instance_config_loads_with_run_limits_and_the_model_pool(tmp_path, shipped_defs):
    import shutil

    shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.run_queue_config.max_concurrent_runs == 2
    graph = shipped_defs.resolve_asset_graph()
    clip_node = graph.get(dg.AssetKey(["saliency", "demo", "clip_saliency"]))
    assert clip_node.pools == {"saliency_model"}
