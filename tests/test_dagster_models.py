"""A table of two models in Dagster, on a temporary instance with real clips and real models:
one clip asset per model on the same clip partitions, an enriched table with each model's
columns, and the comparison asset's correlations and scatter plot."""

import base64

import dagster as dg
import pandas as pd
import pytest
from dagster_support import (
    check_metadata,
    load_defs,
    materialization_metadata,
    partition_metadata,
    range_tags,
    run_job,
    write_corpus,
    write_manifest,
)
from support.small_models import write_brightness_model

from saliency_assets.defs.corpora import load_corpus_tables
from saliency_assets.defs.factory import effective_config
from saliency_assets.defs.resources import FFmpegDecoder, RayCluster, SaliencyModelResource
from saliency_assets.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH

CLIPS = ("a.mp4", "b.mp4", "c.mp4", "d.mp4")
MODEL_IDS = (DEFAULT_MODEL_NAME, "bright")


@pytest.fixture
def defs(tmp_path, monkeypatch):
    write_corpus(tmp_path, clip_names=CLIPS)
    bright = write_brightness_model(tmp_path / "bright.onnx")
    models = [{"model_path": str(DEFAULT_MODEL_PATH)}, {"model_path": str(bright)}]
    return load_defs(monkeypatch, write_manifest(tmp_path, models=models))


def test_each_model_has_its_own_clip_asset_and_the_comparison_asset_exists(defs):
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "saliency/t/source_table",
        f"saliency/t/clip_saliency_{DEFAULT_MODEL_NAME}",
        "saliency/t/clip_saliency_bright",
        "saliency/t/enriched_table",
        "saliency/t/model_comparison",
    }


def test_two_models_materialize_their_clips_the_table_and_the_comparison(
    tmp_path, defs, dagster_instance
):
    run_job(defs, "saliency_t_refresh", dagster_instance)
    clips = run_job(defs, "saliency_t_clips", dagster_instance, tags=range_tags("a.mp4", "d.mp4"))
    enriched = run_job(defs, "saliency_t_enrich", dagster_instance)

    table = pd.read_json(tmp_path / "out/features.saliency.jsonl", lines=True, precise_float=True)
    per_clip = table.drop_duplicates("src").set_index("src")
    for model_id in MODEL_IDS:
        partitions = partition_metadata(clips, f"saliency/t/clip_saliency_{model_id}")
        assert sorted(partitions) == list(CLIPS)
        for clip, metadata in partitions.items():
            assert (metadata["model_id"], metadata["status"]) == (model_id, "ok")
            assert metadata["saliency_mean"] == per_clip.loc[clip, f"saliency_mean__{model_id}"]
    assert (table[[f"saliency_status__{model_id}" for model_id in MODEL_IDS]] == "ok").all().all()
    assert check_metadata(enriched, "coverage")["missing_clips"] == 0

    comparison = materialization_metadata(enriched, "saliency/t/model_comparison")
    label = f"{DEFAULT_MODEL_NAME} vs bright"
    for column in ("saliency_mean", "saliency_var"):
        values = per_clip[[f"{column}__{model_id}" for model_id in MODEL_IDS]]
        assert comparison[f"{label}/{column}/clips"] == len(CLIPS)
        for method in ("pearson", "spearman"):
            expected = values.corr(method).iloc[0, 1]
            assert comparison[f"{label}/{column}/{method}"] == pytest.approx(expected, abs=1e-12)
    plot = comparison[f"{label}/scatter"]
    svg = base64.b64decode(plot.split("data:image/svg+xml;base64,")[1].split(")")[0])
    assert f">saliency_mean ({DEFAULT_MODEL_NAME})</text>".encode() in svg
    assert b">saliency_mean (bright)</text>" in svg and b"<path d=" in svg


def test_a_run_time_model_override_is_refused_for_a_table_of_several_models(defs):
    [table] = load_corpus_tables()
    override = SaliencyModelResource(model_path=str(DEFAULT_MODEL_PATH))
    with pytest.raises(dg.Failure, match="unset the model resource's model_path"):
        effective_config(table, FFmpegDecoder(), override, RayCluster(), table.spec.models[1])
