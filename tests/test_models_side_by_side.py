"""Several models on one table, from the command line and from a manifest: each model's own
columns (equal to a run of that model alone), the row contract per model, the comparison of each
pair, and the ids and columns refused before any work. Real clips, real onnxruntime: the bundled
model beside a second model built here."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from support.small_models import write_brightness_model

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.contract.images import scatter_svg
from saliency_assets.core.contract.manifests import load_manifest
from saliency_assets.core.contract.model_sets import ModelRef, table_models
from saliency_assets.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH

BUNDLED = DEFAULT_MODEL_NAME
# Every column one model writes on an ok row (the error column only on failures).
MODEL_COLUMNS = (
    "saliency_status",
    "saliency_mean",
    "saliency_var",
    "saliency_model_id",
    "saliency_aggregator",
    "saliency_ema_alpha",
    "saliency_sampling",
    "saliency_inference_size",
    "saliency_transfer",
)


@pytest.fixture
def table(tmp_path, clip_dir):
    """Two rows per clip (a per-frame table) over three containers and a raw clip, plus a row
    naming a clip that does not exist."""
    rows = [
        {"src": name, "frame": frame, "width": 64, "height": 48}
        for name in ("clip.mp4", "other.mp4", "wide_540.mp4", "raw_64x48.yuv")
        for frame in range(2)
    ]
    rows.append({"src": "gone.mp4", "frame": 0})
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def bright_model(tmp_path):
    return write_brightness_model(tmp_path / "bright.onnx")


def materialize(table, output, clip_dir, *flags):
    return run_cli(
        "materialize",
        *("--input", str(table), "--output", str(output), "--root", str(clip_dir)),
        *("--jobs", "2", "--max-frames", "2", "--results-store", "none", *flags),
    )


def materialize_both(table, output, clip_dir, bright_model, *flags):
    """The bundled model and the bright one side by side (exit 1: the missing clip's row)."""
    models = ("--model-path", str(DEFAULT_MODEL_PATH), "--model-path", str(bright_model))
    done = materialize(table, output, clip_dir, *models, *flags)
    assert done.returncode == 1, done.stderr
    return done


def read_jsonl(path):
    return pd.read_json(path, lines=True, precise_float=True)


def test_two_models_give_the_columns_of_each_model_run_alone(
    tmp_path, table, clip_dir, bright_model
):
    alone = {}
    for model_id, model_path in ((BUNDLED, DEFAULT_MODEL_PATH), ("bright", bright_model)):
        output = tmp_path / f"{model_id}.jsonl"
        done = materialize(table, output, clip_dir, "--model-path", str(model_path))
        assert done.returncode == 1, done.stderr  # the missing clip's row
        alone[model_id] = read_jsonl(output)
    both_output = tmp_path / "both.jsonl"
    done = materialize_both(table, both_output, clip_dir, bright_model)
    both = read_jsonl(both_output)
    for model_id, single in alone.items():
        assert set(single.columns) == {"src", "frame", "width", "height", "saliency_error"} | set(
            MODEL_COLUMNS
        )
        for column in (*MODEL_COLUMNS, "saliency_error"):
            theirs, ours = single[column], both[f"{column}__{model_id}"]
            if column in ("saliency_mean", "saliency_var"):
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
            else:
                assert ours.equals(theirs), column
    assert not {"saliency_mean", "saliency_status"} & set(both.columns)
    assert f"{BUNDLED} vs bright: saliency_mean pearson=" in done.stderr


def test_the_audit_compares_each_pair_over_clips_where_both_are_finite(
    tmp_path, table, clip_dir, bright_model
):
    output, audit_path = tmp_path / "both.jsonl", tmp_path / "audit.json"
    ids = ("--model-id", "bundled", "--model-id", "bright")
    materialize_both(table, output, clip_dir, bright_model, *ids, "--audit-json", str(audit_path))
    audit = json.loads(audit_path.read_text())
    assert audit["summary"] == {"total": 9, "ok": 8, "skipped_existing": 0, "failed": 1}
    assert [model["model"]["id"] for model in audit["models"]] == ["bundled", "bright"]
    assert audit["models"][1]["columns"]["saliency_mean"] == "saliency_mean__bright"
    [pair] = audit["model_comparison"]
    assert pair["models"] == ["bundled", "bright"]
    clips = read_jsonl(output).drop_duplicates("src").dropna(subset=["saliency_mean__bright"])
    for column in ("saliency_mean", "saliency_var"):
        values = clips[[f"{column}__bundled", f"{column}__bright"]]
        assert pair[column]["clips"] == 4
        pearson, spearman = (values.corr(method).iloc[0, 1] for method in ("pearson", "spearman"))
        assert pair[column]["pearson"] == pytest.approx(pearson, abs=1e-12)
        assert pair[column]["spearman"] == pytest.approx(spearman, abs=1e-12)
    svg = pair["saliency_mean_scatter_svg"]
    assert ">saliency_mean (bundled)</text>" in svg and ">saliency_mean (bright)</text>" in svg
    inputs = audit["run_provenance"]["inputs"]
    assert inputs["model_path__bright"]["sha256"] == audit["models"][1]["model"]["sha256"]


@pytest.mark.parametrize(
    "flags",
    [
        ("--model-path", "{a}/m.onnx", "--model-path", "{b}/m.onnx"),
        (
            "--model-path",
            "{a}/m.onnx",
            "--model-path",
            "{b}/m.onnx",
            "--model-id",
            "x",
            "--model-id",
            "x",
        ),
    ],
    ids=["same-stem", "same-id"],
)
def test_models_with_one_id_are_refused_naming_both(tmp_path, table, clip_dir, flags):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_brightness_model(tmp_path / folder / "m.onnx")
    flags = [flag.format(a=tmp_path / "a", b=tmp_path / "b") for flag in flags]
    output = tmp_path / "out.jsonl"
    done = materialize(table, output, clip_dir, *flags)
    assert done.returncode == 2
    assert str(tmp_path / "a" / "m.onnx") in done.stderr
    assert str(tmp_path / "b" / "m.onnx") in done.stderr
    assert "the same model id" in done.stderr
    assert not output.exists()


def test_one_model_id_for_two_model_paths_is_a_usage_error(tmp_path, table, clip_dir, bright_model):
    models = ("--model-path", str(DEFAULT_MODEL_PATH), "--model-path", str(bright_model))
    done = materialize(table, tmp_path / "out.jsonl", clip_dir, *models, "--model-id", "only")
    assert done.returncode == 2
    assert "--model-id is given 1 times for 2 --model-path" in done.stderr


def test_a_manifest_names_several_models_and_each_keeps_its_own_row_contract(
    tmp_path, clip_dir, bright_model
):
    rows = [
        # Already has the bright model's values: skipped for it, computed for the bundled one.
        {"src": "clip.mp4", "saliency_mean__bright": 0.5, "saliency_var__bright": 0.1},
        {"src": "other.mp4"},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "defaults": {"model_id": "saliency_student_v1", "max_frames": 2},
                "tables": [
                    {
                        "id": "t",
                        "input": "in.jsonl",
                        "output": "out.jsonl",
                        "audit_json": "audit.json",
                        "root": str(clip_dir),
                        "results_store": "none",
                        "models": [
                            {"model_id": BUNDLED},
                            {"model_path": "bright.onnx", "model_id": "bright"},
                        ],
                    }
                ],
            }
        )
    )
    done = run_cli("batch", "--manifest", str(manifest))
    assert done.returncode == 0, done.stderr
    first, second = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert first["saliency_status__bright"] == "skipped-existing"
    assert first["saliency_mean__bright"] == 0.5
    assert first[f"saliency_status__{BUNDLED}"] == "ok"
    assert second["saliency_status__bright"] == second[f"saliency_status__{BUNDLED}"] == "ok"
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["models"][1]["summary"] == {
        "total": 2,
        "ok": 1,
        "skipped_existing": 1,
        "failed": 0,
    }
    assert audit["model_comparison"][0]["saliency_mean"]["clips"] == 2


def test_models_and_a_model_path_in_one_table_are_refused(tmp_path):
    manifest = tmp_path / "manifest.json"
    entry = {"id": "t", "input": "in.jsonl", "output": "out.jsonl", "model_path": "m.onnx"}
    entry["models"] = [{"model_id": "a"}, {"model_id": "b"}]
    manifest.write_text(json.dumps({"tables": [entry]}))
    with pytest.raises(ConfigError, match="either models or model_path/model_id"):
        load_manifest(manifest)


def test_a_table_model_replaces_the_defaults_models(tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "defaults": {"models": [{"model_id": "a"}, {"model_id": "b"}]},
                "tables": [
                    {"id": "pair", "input": "in.jsonl", "output": "pair.jsonl"},
                    {"id": "one", "input": "in.jsonl", "output": "one.jsonl", "model_id": "c"},
                ],
            }
        )
    )
    pair, one = load_manifest(manifest).tables
    assert [model.model_id for model in pair.models] == ["a", "b"]
    assert pair.models[1].values.mean == "saliency_mean__b"
    assert [model.model_id for model in one.models] == ["c"]
    assert one.models[0].values.mean == "saliency_mean" and one.config.model_id == "c"


def test_ids_equal_but_for_case_or_punctuation_are_refused():
    refs = [ModelRef(model_id="student-v1"), ModelRef(model_id="Student_V1")]
    with pytest.raises(ConfigError, match="differ only in case or punctuation"):
        table_models(MaterializeConfig(), refs)


def test_a_model_column_that_is_an_input_column_is_refused():
    config = MaterializeConfig(path_column="saliency_mean__a")
    with pytest.raises(ConfigError, match="'saliency_mean__a' would hold model 'a'"):
        table_models(config, [ModelRef(model_id="a"), ModelRef(model_id="b")])


def test_an_id_that_cannot_name_a_column_is_refused():
    with pytest.raises(ConfigError, match="model 2 .* cannot name columns"):
        table_models(MaterializeConfig(), [ModelRef(model_id="a"), ModelRef(model_id="b c")])


def test_the_scatter_plot_stays_small_however_many_clips_it_shows():
    values = np.random.default_rng(13).random((2, 150_000))  # KoNViD-150K's clip count
    svg = scatter_svg(values[0], values[1], "saliency_mean (v1)", "saliency_mean (v2)")
    assert len(svg) < 300_000
    assert ">saliency_mean (v1)</text>" in svg and ">saliency_mean (v2)</text>" in svg
