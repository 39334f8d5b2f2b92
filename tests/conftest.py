"""Shared fixtures: where the repository and the offline data mirror are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def mirror_path() -> Path:
    """The data mirror: $AOAFFM_MIRROR, else ../shared/datasets beside the repository."""
    env = os.environ.get("AOAFFM_MIRROR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    path = mirror_path()
    if not path.is_dir():
        pytest.skip(f"no data mirror at {path} (set AOAFFM_MIRROR)")
    return path
