"""The code location, loaded the ``dg`` way: everything under ``saliency_assets/defs/``.

``dg check defs``, ``dg dev`` and ``dg launch`` find it through ``[tool.dg]`` in pyproject.toml;
``dagster ... -m saliency_assets.definitions`` and ``workspace.yaml`` load the same object.
"""

from pathlib import Path

import dagster as dg


def build_definitions() -> dg.Definitions:
    """Definitions for every table of every manifest ($SALIENCY_ASSETS_MANIFESTS or manifests/)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
