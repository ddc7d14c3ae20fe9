"""Meta-SGD (Li, Zhou, Chen, Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning"): MAML whose inner step `theta - alpha * grad` has a learned learning rate `alpha`
per parameter entry, meta-learned with the initialisation.

The rates live in the params dict as `lr.<name>` (same shape as `<name>`, initialised to
`inner_lr`), so clients meta-train them and the server averages them like the weights; only
the model's own params are passed to the model.
"""

import torch

from fedmeta.learners.inner import LearningRate
from fedmeta.learners.maml import MAML
from fedmeta.params import Params

PREFIX = "lr."


class MetaSGD(MAML):
    adaptation = ("eval_inner_steps",)  # its rates are learned: inner_lr only starts them
    adaptation_rate = None

    def init_params(self) -> Params:
        weights = super().init_params()
        rates = {PREFIX + k: torch.full_like(v, self.inner_lr) for k, v in weights.items()}
        return {**weights, **rates}

    def forward(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return super().forward({k: v for k, v in params.items() if not k.startswith(PREFIX)}, x)

    def adapted(self, name: str) -> bool:
        return not name.startswith(PREFIX)

    def inner_lr_of(self, params: Params) -> LearningRate:
        return {k.removeprefix(PREFIX): v for k, v in params.items() if k.startswith(PREFIX)}
