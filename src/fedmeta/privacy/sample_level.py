"""Sample-level DP-SGD inside a client (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang
2016, "Deep Learning with Differential Privacy"), for a client that must protect each of its
own records: per-example gradients (`torch.func.vmap` of `grad`), each clipped to L2 norm C,
summed, Gaussian noise of std `noise_multiplier * C` added, divided by the batch size.

A client's minibatches are drawn without replacement, `batch_size` of its `n` records, so its
accountant is the subsampled Gaussian without replacement under replace-one neighbouring
(Wang, Balle, Kasiviswanathan 2019), composed over its local steps.
"""

from collections.abc import Callable

import dp_accounting
import torch
from dp_accounting.rdp import RdpAccountant
from torch.func import grad_and_value, vmap

from fedmeta.params import Params


def private_gradient(loss_one: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor],
                     params: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                     clip_norm: float, noise_multiplier: float,
                     noise: Params) -> tuple[Params, torch.Tensor]:
    """(DP-SGD's gradient, the mean loss) of a minibatch; `loss_one(params, x_i, y_i)` is one
    example's loss, `mask` marks real examples, `noise` holds standard normal draws shaped
    like the params."""
    grads, losses = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    scale = (clip_norm / norms.clamp_min(1e-12)).clamp(max=1.0) * mask
    batch = mask.sum()
    private = {k: (torch.tensordot(scale.to(g.dtype), g, dims=1)
                   + noise_multiplier * clip_norm * noise[k]) / batch for k, g in grads.items()}
    return private, (losses * mask).sum() / batch


def client_epsilon(noise_multiplier: float, batch_size: int, client_size: int, steps: int,
                   delta: float) -> float:
    """Epsilon at `delta` of a client's records after `steps` DP-SGD steps of `batch_size` of
    its `client_size` records (inf without noise)."""
    if noise_multiplier == 0:
        return float("inf")
    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    step = dp_accounting.SampledWithoutReplacementDpEvent(
        client_size, min(batch_size, client_size), dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant.compose(step, steps)
    return float(accountant.get_epsilon(delta))
