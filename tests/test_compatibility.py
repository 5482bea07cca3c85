"""Compatible mode reproduces the reference pipeline within 1e-6, with the real student models.

The reference side is the independent oracle in ``support/reference_pipeline.py`` (an ffmpeg
process, a temporary raw file, numpy colour conversion, a fresh onnxruntime session); ours is the
product's clip computation (in-process PyAV decode, a long-lived session) on each inference
engine the product can choose: onnxruntime's CPU provider and the OpenVINO runtime (the default
where installed). Clips are real encodes made by the test.
"""

import pytest
from support.clips import ffmpeg_exe, make_clip, make_raw_yuv
from support.reference_pipeline import reference_compute_clip

from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.model.clip_saliency import ClipJob, compute_clip
from saliency_assets.core.model.saliency_model import SaliencyModel

TOLERANCE = 1e-6
AGGREGATORS = ("mean", "ema", "max", "motion-weighted")


@pytest.fixture(scope="module")
def compat_clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compat")
    return {
        "h264_64x48": (make_clip(folder / "a.mp4", 64, 48, 12), 64, 48),
        "vp9_96x54": (make_clip(folder / "b.mkv", 96, 54, 10, codec="libvpx-vp9"), 96, 54),
        "mpeg4_portrait_48x80": (make_clip(folder / "c.mp4", 48, 80, 9, codec="mpeg4"), 48, 80),
    }


ENGINES = {"onnxruntime": ("CPUExecutionProvider",), "openvino": ("OpenVINO",)}


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request):
    return ENGINES[request.param]


@pytest.fixture(scope="module", params=["saliency_student_v1", "saliency_student_v2"])
def student(request, shared_models_dir, engine):
    path = shared_models_dir / f"{request.param}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    model = SaliencyModel(path, engine)
    assert model.providers == (engine[0],)  # no silent fallback to another engine
    return path, model


def ours(source, model_path, model, aggregator, max_frames=8, frame_samples=8, ema_alpha=0.6):
    plan = SamplingPlan(max_frames=max_frames, frame_samples=frame_samples)
    job = ClipJob(plan, aggregator, ema_alpha, model_path, ("CPUExecutionProvider",))
    return compute_clip(source, job, model)


def theirs(
    path, width, height, model_path, aggregator, max_frames=8, frame_samples=8, ema_alpha=0.6
):
    return reference_compute_clip(
        ffmpeg_exe(),
        path,
        width,
        height,
        model_path,
        max_frames,
        frame_samples,
        aggregator,
        ema_alpha,
        enforce_height_multiple_of_8=False,
    )


def assert_same(result, reference):
    assert reference.status == "ok", reference.error
    assert result.status == "ok", result.detail
    assert result.saliency_mean == pytest.approx(reference.mean, abs=TOLERANCE)
    assert result.saliency_var == pytest.approx(reference.var, abs=TOLERANCE)


@pytest.mark.parametrize("aggregator", AGGREGATORS)
@pytest.mark.parametrize("clip_name", ["h264_64x48", "vp9_96x54", "mpeg4_portrait_48x80"])
def test_matches_reference(student, compat_clips, clip_name, aggregator):
    model_path, model = student
    path, width, height = compat_clips[clip_name]
    assert_same(
        ours(ClipSource(path), model_path, model, aggregator),
        theirs(path, width, height, model_path, aggregator),
    )


@pytest.mark.parametrize(("max_frames", "frame_samples"), [(8, 3), (4, 4), (30, 8), (1, 5)])
def test_matches_reference_sampling_rule(student, compat_clips, max_frames, frame_samples):
    model_path, model = student
    path, width, height = compat_clips["h264_64x48"]
    kwargs = {"max_frames": max_frames, "frame_samples": frame_samples}
    assert_same(
        ours(ClipSource(path), model_path, model, "ema", ema_alpha=0.3, **kwargs),
        theirs(path, width, height, model_path, "ema", ema_alpha=0.3, **kwargs),
    )


def test_matches_reference_on_raw_yuv(student, tmp_path):
    model_path, model = student
    raw = make_raw_yuv(tmp_path / "r.yuv", 64, 48, 6)
    source = ClipSource(raw, raw_width=64, raw_height=48, raw_pix_fmt="yuv420p")
    assert_same(ours(source, model_path, model, "mean"), theirs(raw, 64, 48, model_path, "mean"))
