"""Shared fixtures."""
import os
from pathlib import Path

import pytest
import torch

from test_cli import fedmeta

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


@pytest.fixture(scope="module")
def client_files(tmp_path_factory) -> tuple[list[Path], list[Path], list[Path]]:
    """Files of 3 training clients, 1 meta-test client and 1 meta-validation client."""
    out = tmp_path_factory.mktemp("clients")
    config = tmp_path_factory.mktemp("config") / "config.toml"
    config.write_text('[data]\ndataset = "omniglot"\npath = "bundled"\n')
    result = fedmeta("export-clients", config, out, "--clients", 3, "--held-out", 1,
                     "--validation", 1)
    assert result.returncode == 0, result.stderr
    return (sorted(out.glob("client_*.npz")), sorted(out.glob("heldout_*.npz")),
            sorted(out.glob("validation_*.npz")))
