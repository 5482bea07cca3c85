"""The signal-mix audit of the saliency columns: coverage, spread and correlation with a target,
in the core and as the enriched table's ``signal`` check after a real Dagster materialization."""

import json
import math

import dagster as dg
import numpy as np
import pytest
from dagster_support import load_defs, range_tags, run_job, write_corpus, write_manifest

from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.contract.manifests import load_manifest
from saliency_assets.core.contract.signal_audit import audit_signal, average_ranks


def rows_of(means, targets=None):
    targets = targets if targets is not None else [None] * len(means)
    return [
        {"saliency_mean": mean, "saliency_var": 0.01 * index, "mos": target}
        for index, (mean, target) in enumerate(zip(means, targets, strict=True))
    ]


def test_finite_share_counts_only_finite_numbers():
    rows = rows_of([0.1, None, float("nan"), "text", 0.5, 0.2, 0.3, 0.4, 0.6, 0.7])
    (mean, _) = audit_signal(rows, None)
    assert mean.finite_share == pytest.approx(0.7)
    assert mean.std == pytest.approx(np.std([0.1, 0.5, 0.2, 0.3, 0.4, 0.6, 0.7]))
    assert not mean.covered  # 70 % < 80 %
    assert mean.pearson is None and mean.spearman is None


def test_constant_column_is_not_covered():
    (mean, _) = audit_signal(rows_of([0.3] * 5, [1, 2, 3, 4, 5]), "mos")
    assert mean.finite_share == 1.0 and mean.std == 0.0 and not mean.covered
    assert mean.pearson is None  # no spread, no correlation


def test_pearson_and_spearman_over_rows_where_both_are_finite():
    means = [0.1, 0.2, 0.3, 0.4, 0.9, 0.5]
    targets = [1.0, 2.0, 3.0, 4.0, 5.0, None]
    (mean, _) = audit_signal(rows_of(means, targets), "mos")
    assert mean.pairs == 5
    assert mean.pearson == pytest.approx(np.corrcoef(means[:5], targets[:5])[0, 1])
    assert mean.spearman == pytest.approx(1.0)  # monotone, though not linear
    assert mean.covered


def test_spearman_gives_ties_their_average_rank():
    (mean, _) = audit_signal(rows_of([1, 1, 2, 3], [1, 2, 3, 4]), "mos")
    # ranks 1.5, 1.5, 3, 4 against 1, 2, 3, 4
    assert mean.spearman == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])


@pytest.mark.parametrize("distinct", [2, 7, 10**9])
def test_average_ranks_are_pandas_ranks(distinct):
    import pandas as pd  # the reference only: the product ranks without pandas

    values = np.random.default_rng(distinct).integers(0, distinct, 200).astype(np.float64)
    assert np.array_equal(average_ranks(values), pd.Series(values).rank().to_numpy())


def test_target_column_must_be_a_name(tmp_path):
    manifest = tmp_path / "m.json"
    entry = {"id": "t", "input": "a.jsonl", "output": "b.jsonl", "target_column": ""}
    manifest.write_text(json.dumps({"tables": [entry]}))
    with pytest.raises(ConfigError, match="table 't'.*target_column must be a non-empty"):
        load_manifest(manifest)


def with_target(table_path, scores):
    """Add a ``mos`` column to the corpus table, one score per clip (by clip name)."""
    rows = [json.loads(line) for line in table_path.read_text().splitlines()]
    for row in rows:
        row["mos"] = scores.get(row["src"])
    table_path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def materialize(defs, instance):
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    return run_job(defs, "saliency_t_enrich", instance, raise_on_error=False)


def signal_evaluation(enriched):
    found = [e for e in enriched.get_asset_check_evaluations() if e.check_name == "signal"]
    assert len(found) == 1
    return found[0]


def test_signal_check_reports_coverage_and_correlation_with_the_target(
    tmp_path, dagster_instance, monkeypatch
):
    with_target(write_corpus(tmp_path), {"a.mp4": 3.1, "b.mp4": 4.2, "c.mp4": 2.5})
    defs = load_defs(monkeypatch, write_manifest(tmp_path, target_column="mos"))
    check = signal_evaluation(materialize(defs, dagster_instance))
    written = [
        json.loads(line)
        for line in (tmp_path / "out/features.saliency.jsonl").read_text().splitlines()
    ]
    means = [row["saliency_mean"] for row in written]
    scores = [row["mos"] for row in written]
    metadata = {name: value.value for name, value in check.metadata.items()}
    assert check.passed is True
    assert metadata["target_column"] == "mos"
    assert metadata["saliency_mean/finite_share"] == 1.0
    assert metadata["saliency_mean/std"] == pytest.approx(np.std(means))
    assert metadata["saliency_mean/pearson"] == pytest.approx(np.corrcoef(means, scores)[0, 1])
    assert metadata["saliency_mean/pairs_with_target"] == 6
    assert -1.0 <= metadata["saliency_var/spearman"] <= 1.0
    assert isinstance(check.metadata["saliency_mean/spearman"], dg.FloatMetadataValue)


def test_signal_check_warns_when_fewer_than_80_percent_of_rows_have_values_or_no_target(
    tmp_path, dagster_instance, monkeypatch
):
    write_corpus(tmp_path, missing=["gone.mp4", "lost.mp4"])  # 6 of 8 rows computed: 75 %
    manifest = write_manifest(
        tmp_path, dagster_options={"allow_row_failures": True}, target_column="vmaf"
    )
    defs = load_defs(monkeypatch, manifest)
    check = signal_evaluation(materialize(defs, dagster_instance))
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["saliency_mean/finite_share"].value == pytest.approx(0.75)
    assert check.metadata["target_column"].value == "vmaf"
    assert check.description == "no row has a finite 'vmaf' beside the saliency"
    assert not any(name.endswith("pearson") for name in check.metadata)
    assert not math.isnan(check.metadata["saliency_mean/std"].value)
