"""Shared fixtures."""
import os
from pathlib import Path

import pytest
import torch

# One intra-op thread: tests run tiny models, which on a shared two-core machine ran hundreds of
# times slower with two spinning OpenMP threads than with one.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data directory ($FEDMETA_SHARED_DATA or <repo>/../shared/data)."""
    d = Path(os.environ.get("FEDMETA_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
    if not d.is_dir():
        pytest.skip(f"real data directory {d} not present")
    return d
