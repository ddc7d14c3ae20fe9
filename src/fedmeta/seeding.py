"""Every random draw of a run comes from a generator seeded by a tuple of keys (seed, round,
client, ...), so a run is a pure function of its config."""

import numpy as np
import torch


def seeded(*keys: int) -> torch.Generator:
    """A generator whose seed is a hash of `keys` (numpy's SeedSequence)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(seed)


def normal_like(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal draws shaped and typed as `like`, on its device: drawn on the CPU,
    then moved, so the same generator gives the same values on any device."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


def uniform_like(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) draws shaped and typed as `like`, on its device (as `normal_like`)."""
    return torch.rand(like.shape, generator=generator, dtype=like.dtype).to(like.device)


def client_generator(seed: int, round_index: int, client: int) -> torch.Generator:
    """Client `client`'s generator in round `round_index`, from which its local round draws
    its data: the same wherever the client runs, which is what lets a deployment reproduce a
    simulation (round 0: before training, the data check)."""
    return seeded(seed, round_index, client)


# The key after the seed that sets a stream apart from the rounds' (seed, round[, client]):
EVAL_STREAM = 2**31 - 1  # evaluation episodes
AUDIT_STREAM = 2**31 - 2  # canaries of the privacy audit
NOISE_STREAM = 2**31 - 3  # DP noise on the aggregate
CLIP_STREAM = 2**31 - 4  # DP noise on adaptive clipping's count
SECAGG_STREAM = 2**31 - 5  # stochastic rounding of secure aggregation's fixed point
ATTACK_STREAM = 2**31 - 6  # which clients are malicious, and their noise
FAULT_STREAM = 2**31 - 7  # dropouts and round times of simulated unreliable clients
QUANTIZE_STREAM = 2**31 - 8  # stochastic rounding of compressed client updates
CUT_NOISE_STREAM = 2**31 - 9  # vertical FL: the parties' private noise on what crosses the cut
