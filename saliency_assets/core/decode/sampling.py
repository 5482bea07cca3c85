"""Which frame indices of a clip reach the model.

``head`` reproduces the reference tool exactly (REFERENCE.md section 7, weaknesses W1/W2 included);
``spread`` spreads the same number of samples evenly over the whole clip.
"""

from __future__ import annotations

from saliency_assets.core.decode.clips import SAMPLING_MODES, SamplingPlan


def reference_indices(total: int, samples: int) -> list[int]:
    """The reference rule: ``0, step, 2*step, ...`` below ``total``, at most ``samples`` of them.

    ``step = max(1, total // samples)``; ``[]`` for an empty clip and ``[0]`` when one sample is
    asked for or the clip has one frame.
    """
    if total <= 0:
        return []
    if samples <= 1 or total == 1:
        return [0]
    step = max(1, total // samples)
    return list(range(0, total, step))[:samples]


def spread_indices(total: int, samples: int) -> list[int]:
    """``min(samples, total)`` distinct indices, the floor of the centres of equal segments.

    Segment ``k`` of ``n`` covers ``[k*total/n, (k+1)*total/n)``; its centre, rounded down, is
    ``(2k+1)*total // (2n)``, computed in integers so no float rounding can repeat an index.
    """
    if total <= 0 or samples <= 0:
        return []
    count = min(samples, total)
    return [(2 * k + 1) * total // (2 * count) for k in range(count)]


def sample_count(plan: SamplingPlan) -> int:
    """How many frames the plan asks for: ``max(1, min(frame_samples, max_frames))``."""
    return max(1, min(int(plan.frame_samples), int(plan.max_frames)))


def head_length(plan: SamplingPlan) -> int:
    """How many leading frames head mode decodes at most: ``max(1, max_frames)``."""
    return max(1, int(plan.max_frames))


def sample_indices(plan: SamplingPlan, clip_length: int) -> list[int]:
    """The sorted frame indices the plan takes from a clip of ``clip_length`` frames.

    Head mode applies the reference rule to the first ``min(max_frames, clip_length)`` frames;
    spread mode applies :func:`spread_indices` to the whole clip.
    """
    if plan.sampling == "head":
        total = min(head_length(plan), clip_length)
        return reference_indices(total, sample_count(plan))
    if plan.sampling == "spread":
        return spread_indices(clip_length, sample_count(plan))
    raise ValueError(f"unknown sampling mode {plan.sampling!r}; expected one of {SAMPLING_MODES}")
