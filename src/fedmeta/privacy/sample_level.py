"""Sample-level DP-SGD inside a client (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang
2016, "Deep Learning with Differential Privacy"), for a client that must protect each of its
own records: per-example gradients (`torch.func.vmap` of `grad`), each clipped to L2 norm C,
summed, Gaussian noise of std `noise_multiplier * C` added, divided by the batch size.

A client's minibatches are drawn without replacement, `batch_size` of its `n` records, so its
accountant is `fedmeta.privacy.accountant.without_replacement_epsilon` over its local steps.
"""

from collections.abc import Callable

import torch
from torch.func import grad_and_value, vmap

from fedmeta.params import Params
from fedmeta.privacy.user_level import clip_factors


def private_gradient(loss_one: Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor],
                     params: Params, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                     clip_norm: float, noise_multiplier: float,
                     noise: Params) -> tuple[Params, torch.Tensor]:
    """(DP-SGD's gradient, the mean loss) of a minibatch; `loss_one(params, x_i, y_i)` is one
    example's loss, `mask` marks real examples, `noise` holds standard normal draws shaped
    like the params."""
    grads, losses = vmap(grad_and_value(loss_one), in_dims=(None, 0, 0))(params, x, y)
    scale = clip_factors(grads, clip_norm) * mask
    batch = mask.sum()
    private = {k: (torch.tensordot(scale.to(g.dtype), g, dims=1)
                   + noise_multiplier * clip_norm * noise[k]) / batch for k, g in grads.items()}
    return private, (losses * mask).sum() / batch
