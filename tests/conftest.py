"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS_ENV = "SALIENCY_ASSETS_SHARED_MODELS"


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    """The folder holding the upstream saliency_student ONNX models.

    ``$SALIENCY_ASSETS_SHARED_MODELS`` when set, else ``<repo root>/../shared/models``; tests
    that need it are skipped, with the path in the reason, when the folder does not exist.
    """
    configured = os.environ.get(SHARED_MODELS_ENV)
    models_dir = Path(configured) if configured else REPO_ROOT.parent / "shared" / "models"
    if not models_dir.is_dir():
        pytest.skip(f"shared models folder {models_dir} not found (set {SHARED_MODELS_ENV})")
    return models_dir
