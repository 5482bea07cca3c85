"""Through the command line a user has, on their own manifest: `dg` and `dagster`.

Each clip partition carries its own status and value; data versions stay on a no-op rerun (in
another process) and change for a changed clip only; a key that names no clip fails naming it;
`dg check defs` passes. (A clip removed from the table losing its partition is the same
source_table code in test_dagster_clips.py, without another Dagster start-up.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_support import write_corpus, write_manifest
from support.clips import make_clip

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE = ["-m", "saliency_assets.definitions"]
CLIPS = dg.AssetKey(["saliency", "t", "clip_saliency"])


@pytest.fixture
def user(tmp_path):
    """A user's corpus and manifest, and the environment the commands run in."""
    write_corpus(tmp_path / "corpus")
    (tmp_path / "corpus" / "clips" / "b.mp4").write_bytes(b"not a video")
    manifest = write_manifest(tmp_path / "corpus", dagster_options={"clips_per_run": 3})
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SALIENCY_ASSETS_MANIFESTS": str(manifest),
        "VIRTUAL_ENV": str(Path(bin_dir).parent),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    return {"corpus": tmp_path / "corpus", "home": home, "env": env}


def command(user, *args: str, ok: bool = True) -> str:
    done = subprocess.run(
        list(args),
        cwd=REPO_ROOT,
        env=user["env"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert (done.returncode == 0) == ok, f"{args} exited {done.returncode}:\n{output[-3000:]}"
    return output


def clip_events(user) -> dict[str, tuple[str, dict]]:
    """Each clip partition's latest data version and metadata, read from the instance."""
    with dg.instance_for_test(temp_dir=str(user["home"])) as instance:
        found = {}
        for partition in instance.get_dynamic_partitions("saliency_t_clips"):
            records_filter = dg.AssetRecordsFilter(asset_key=CLIPS, asset_partitions=[partition])
            records = instance.fetch_materializations(records_filter, limit=1).records
            if records:
                event = records[0].asset_materialization
                metadata = {name: value.value for name, value in event.metadata.items()}
                found[partition] = (event.tags["dagster/data_version"], metadata)
        return found


def compute_all(user) -> None:
    tags = {
        "dagster/asset_partition_range_start": "a.mp4",
        "dagster/asset_partition_range_end": "c.mp4",
    }
    command(
        user,
        "dagster",
        "job",
        "execute",
        *MODULE,
        "-j",
        "saliency_t_clips",
        "--tags",
        json.dumps(tags),
    )


def test_a_users_manifest_through_dg_and_the_dagster_cli(user):
    assert "All definitions loaded successfully" in command(user, "dg", "check", "defs")
    command(user, "dagster", "asset", "materialize", *MODULE, "--select", "saliency/t/source_table")
    compute_all(user)
    first = clip_events(user)
    statuses = {key: metadata["status"] for key, (_, metadata) in first.items()}
    assert statuses == {"a.mp4": "ok", "b.mp4": "decode-failed", "c.mp4": "ok"}
    assert first["a.mp4"][1]["saliency_mean"] != first["c.mp4"][1]["saliency_mean"]
    assert "error" in first["b.mp4"][1]

    compute_all(user)  # nothing changed
    assert {key: version for key, (version, _) in clip_events(user).items()} == {
        key: version for key, (version, _) in first.items()
    }

    make_clip(user["corpus"] / "clips" / "c.mp4", 96, 64, 4)
    command(user, "dg", "launch", "--assets", "saliency/t/clip_saliency", "--partition", "c.mp4")
    changed = clip_events(user)
    assert [key for key in first if changed[key][0] != first[key][0]] == ["c.mp4"]

    with dg.instance_for_test(temp_dir=str(user["home"])) as instance:
        instance.add_dynamic_partitions("saliency_t_clips", ["typo.mp4"])  # as the UI can
    output = command(
        user,
        "dagster",
        "asset",
        "materialize",
        *MODULE,
        "--select",
        "saliency/t/clip_saliency",
        "--partition",
        "typo.mp4",
        ok=False,
    )
    assert "'typo.mp4' names no clip of table 't'" in output
