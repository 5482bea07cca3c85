"""The demo corpus: a few small real clips and a per-frame feature table naming them.

Generated with PyAV's encoders so a fresh machine needs nothing else. The clips show moving
content (a bright object drifting over a graded background) so saliency has something to find.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.tables.table_files import write_text_atomic

DEMO_FRAMES = 12
DEMO_RATE = 25


@dataclass(frozen=True)
class DemoClip:
    name: str
    width: int
    height: int
    codec: str


DEMO_CLIPS = (
    DemoClip("drift_h264.mp4", 320, 180, "libx264"),
    DemoClip("drift_portrait_h264.mp4", 180, 320, "libx264"),
    DemoClip("drift_vp9.mkv", 256, 144, "libvpx-vp9"),
    DemoClip("drift_mpeg4.mp4", 240, 136, "mpeg4"),
)
ROWS_PER_CLIP = 3


def generate_demo_corpus(workdir: Path) -> Path:
    """Write the clips under ``workdir/clips`` and the table ``workdir/features.jsonl``."""
    clips_dir = Path(workdir) / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in DEMO_CLIPS:
        path = clips_dir / clip.name
        if not path.exists():
            write_demo_clip(path, clip)
        rows.extend(
            {"src": clip.name, "frame": frame, "width": clip.width, "height": clip.height}
            for frame in range(ROWS_PER_CLIP)
        )
    rows.append({"src": "missing_clip.mp4", "frame": 0, "width": 320, "height": 180})
    table = Path(workdir) / "features.jsonl"
    write_text_atomic(table, "".join(json.dumps(row) + "\n" for row in rows))
    return table


def write_demo_clip(path: Path, clip: DemoClip) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(clip.codec, rate=DEMO_RATE)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        for index in range(DEMO_FRAMES):
            frame = av.VideoFrame.from_ndarray(
                drift_frame(clip.width, clip.height, index), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def drift_frame(width: int, height: int, index: int) -> np.ndarray:
    """A graded background with a bright disc drifting right; uint8 (H, W, 3)."""
    rows, cols = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (40 + 60 * cols / max(width - 1, 1)).astype(np.uint8)
    frame[..., 1] = (50 + 50 * rows / max(height - 1, 1)).astype(np.uint8)
    frame[..., 2] = 70
    centre_x = width * (0.25 + 0.5 * index / DEMO_FRAMES)
    radius = min(width, height) / 6
    disc = (cols - centre_x) ** 2 + (rows - height / 2) ** 2 <= radius**2
    frame[disc] = (240, 60, 40)
    return frame


def run_demo(workdir: Path | None = None) -> int:
    """Generate the demo corpus and materialise ``saliency/demo/*`` with ``dagster asset
    materialize`` on a local instance; print where the enriched table is."""
    from saliency_assets.defs.corpora import DEFAULT_MANIFESTS_DIR

    repo = DEFAULT_MANIFESTS_DIR.parent
    table = generate_demo_corpus(workdir or repo / "demo-output")
    home = Path(os.environ.get("DAGSTER_HOME") or repo / ".dagster_home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home.resolve()),
        "SALIENCY_ASSETS_MANIFESTS": str(DEFAULT_MANIFESTS_DIR / "demo.json"),
    }
    _prepare_instance(home, repo / "dagster.yaml")
    first, last = demo_partition_range(table)
    steps = [
        ["--select", "saliency/demo/source_table"],
        ["--select", "saliency/demo/clip_saliency", "--partition-range", f"{first}...{last}"],
        ["--select", "saliency/demo/enriched_table"],
    ]
    for step in steps:
        command = [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "saliency_assets.definitions",
            *step,
        ]
        print("$ dagster asset materialize " + " ".join(step), flush=True)
        if subprocess.run(command, env=env, cwd=repo, check=False).returncode != 0:
            print("demo: the Dagster run failed (see the log above)", file=sys.stderr)
            return 1
    output = (repo / "demo-output" / "features.saliency.jsonl").resolve()
    print(f"enriched table: {output}")
    print(
        f"Dagster instance: {home.resolve()} (open the UI with: DAGSTER_HOME={home} "
        ".venv/bin/dagster dev -w workspace.yaml)"
    )
    return 0


def demo_partition_range(table: Path) -> tuple[str, str]:
    """The first and last clip partition keys of the demo table, in registration order."""
    from saliency_assets.core.run.engine import unique_clips
    from saliency_assets.core.tables.table_files import read_table
    from saliency_assets.defs.partitions import clip_partition_key

    config = MaterializeConfig(root=table.parent / "clips")
    sources = list(unique_clips(read_table(table).rows, config).values())
    keys = [clip_partition_key(source, config.root) for source in sources]
    return keys[0], keys[-1]


def _prepare_instance(home: Path, template: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(template, home / "dagster.yaml")


if __name__ == "__main__":
    sys.exit(run_demo())
