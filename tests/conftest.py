"""Shared fixtures."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data directory ($FEDMETA_SHARED_DATA or <repo>/../shared/data)."""
    d = Path(os.environ.get("FEDMETA_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
    if not d.is_dir():
        pytest.skip(f"real data directory {d} not present")
    return d
