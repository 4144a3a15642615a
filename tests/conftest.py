"""Shared fixtures.  MovieLens copies live in ../shared/data (never in the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FMREC_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
INTEROP = SHARED / "interop"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"MovieLens copies not found at {DATA} (set FMREC_SHARED to the shared/ folder)")
    return DATA


@pytest.fixture(scope="session")
def ml100k(shared_data: Path) -> Path:
    return shared_data / "ml-100k"


@pytest.fixture(scope="session")
def interop() -> Path:
    folder = INTEROP / "sagemaker-fm-ml100k-ua"
    if not folder.is_dir():
        pytest.skip(f"interop files not found at {folder}")
    return folder
