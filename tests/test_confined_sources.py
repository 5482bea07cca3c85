"""Under confine_to_root the file checked is the file opened: a symlink swapped between the
check and the decode cannot lead out of the root."""

from __future__ import annotations

from support.clips import make_clip

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.decode.clips import SamplingPlan
from saliency_assets.core.decode.decoding import decode_clip
from saliency_assets.core.tables.sources import resolve_clip


def test_a_link_swapped_after_the_check_still_opens_the_checked_file(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    inside = make_clip(root / "inside.mp4", 64, 48, 2)
    outside = make_clip(tmp_path / "outside.mp4", 96, 64, 2)
    link = root / "link.mp4"
    link.symlink_to(inside)
    config = MaterializeConfig(root=root, confine_to_root=True)

    source = resolve_clip({"src": "link.mp4"}, config)  # the check: the link leads inside
    link.unlink()
    link.symlink_to(outside)  # swapped before the clip is opened
    decoded = decode_clip(source, SamplingPlan(max_frames=1))

    assert (decoded.width, decoded.height) == (64, 48)
    assert source.path == inside.resolve()


def test_a_link_that_leads_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.mp4").symlink_to(make_clip(tmp_path / "outside.mp4", 64, 48, 2))
    resolved = resolve_clip({"src": "link.mp4"}, MaterializeConfig(root=root, confine_to_root=True))
    assert resolved.status == "missing-source"
    assert "is outside root" in resolved.detail
