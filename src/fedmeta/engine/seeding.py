"""Every random draw of a run comes from a generator seeded by a tuple of keys (seed, round,
client, ...), so a run is a pure function of its config."""

import numpy as np
import torch


def seeded(*keys: int) -> torch.Generator:
    """A generator whose seed is a hash of `keys` (numpy's SeedSequence)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)
