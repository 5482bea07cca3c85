"""Frame-index rules: the reference head rule (REFERENCE.md section 7) and the spread rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saliency_assets.core.decode.clips import SamplingPlan
from saliency_assets.core.decode.sampling import (
    reference_indices,
    sample_indices,
    spread_indices,
)


@pytest.mark.parametrize(
    ("total", "samples", "expected"),
    [
        (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (8, 5, [0, 1, 2, 3, 4]),
        (8, 4, [0, 2, 4, 6]),
        (8, 3, [0, 2, 4]),
        (3, 8, [0, 1, 2]),
        (30, 8, [0, 3, 6, 9, 12, 15, 18, 21]),
        (10, 4, [0, 2, 4, 6]),
        (1, 5, [0]),
        (57, 1, [0]),
        (0, 4, []),
    ],
)
def test_reference_indices_match_the_reference_table(total, samples, expected):
    assert reference_indices(total, samples) == expected


@pytest.mark.parametrize(
    ("total", "samples", "expected"),
    [
        (10, 4, [1, 3, 6, 8]),
        (8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (3, 8, [0, 1, 2]),
        (100, 1, [50]),
        (300, 3, [50, 150, 250]),
        (0, 3, []),
    ],
)
def test_spread_indices_are_segment_centres(total, samples, expected):
    assert spread_indices(total, samples) == expected


@given(st.integers(0, 5000), st.integers(1, 64))
def test_spread_indices_are_distinct_sorted_and_in_range(total, samples):
    indices = spread_indices(total, samples)
    assert len(indices) == min(samples, total)
    assert indices == sorted(set(indices))
    assert all(0 <= i < total for i in indices)


@given(st.integers(0, 5000), st.integers(-3, 64))
def test_reference_indices_stay_in_range(total, samples):
    indices = reference_indices(total, samples)
    assert all(0 <= i < total for i in indices)
    assert len(indices) <= max(1, samples)


def test_head_plan_uses_reference_rule_on_the_decoded_head():
    plan = SamplingPlan(max_frames=8, frame_samples=4, sampling="head")
    assert sample_indices(plan, 1000) == [0, 2, 4, 6]
    # a 5-frame clip decodes 5 frames, so step = 5 // 4 = 1
    assert sample_indices(plan, 5) == [0, 1, 2, 3]


def test_head_plan_clamps_non_positive_settings_to_one():
    assert sample_indices(SamplingPlan(max_frames=0, frame_samples=0), 50) == [0]
    assert sample_indices(SamplingPlan(max_frames=-4, frame_samples=8), 50) == [0]


def test_head_plan_caps_samples_at_max_frames():
    plan = SamplingPlan(max_frames=4, frame_samples=16, sampling="head")
    assert sample_indices(plan, 100) == [0, 1, 2, 3]


def test_spread_plan_covers_the_whole_clip():
    plan = SamplingPlan(max_frames=8, frame_samples=4, sampling="spread")
    assert sample_indices(plan, 400) == [50, 150, 250, 350]
    assert sample_indices(plan, 2) == [0, 1]


def test_unknown_sampling_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown sampling mode"):
        sample_indices(SamplingPlan(sampling="middle"), 10)
