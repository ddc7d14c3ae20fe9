"""FedAvg (McMahan, Moore, Ramage, Hampson, Arcas 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data"), the non-meta-learning baseline, and FedAvg with
fine-tuning.

Training: the model's head has one output per global class of the training clients
(`head = "global"`, `train.num_classes` outputs) and a client takes `local_steps` steps of the
local optimizer on minibatches of `batch_size` of its own labeled examples (global labels,
which must lie in 0..num_classes-1; no episodes; a smaller client's minibatch is all of it).

Meta-test clients hold classes never seen in training, so the global head cannot score them
(where tasks keep the dataset's labels, text's vocabulary or `task.labels = "global"`, the
head was trained on them: `fedavg` predicts with the global model as it is and `fedavg-ft`
fine-tunes it, head included):

- `fedavg` scores each query by its nearest class mean of the penultimate features over the
  support set (no weight adaptation; the prototype rule of Snell et al. 2017);
- `fedavg-ft` fine-tunes a fresh, zero-initialised N-way head together with the body for
  `finetune_steps` full-batch SGD steps of `finetune_lr` on the support set.

On a rating model (`Learner.rates`: one output, the rating, whatever the user) `fedavg`
predicts a new user's ratings with the global model as it is, and `fedavg-ft` fine-tunes all
of it on the user's support set, as FedAvg+FT does in MeLU's and Per-FedAvg's comparisons.

Scored on the training clients' own held-out examples (PFLlib's protocol), the global head
predicts them as it is (`fedavg`, and every learner built on it through its `personal_model`),
or after `fedavg-ft`'s steps on the client's own training examples.
"""

from typing import Any

import torch
from torch import nn
from torch.func import grad_and_value

from fedmeta.data import ClientData, EpisodeSampler, as_float_input
from fedmeta.learners.base import Learner, own_shots
from fedmeta.learners.inner import sgd_steps
from fedmeta.learners.protonet import prototype_logits, prototypes
from fedmeta.optim import Transform
from fedmeta.params import Params, detached
from fedmeta.privacy.sample_level import private_gradient


class FedAvg(Learner):
    head = "global"
    hyperparameters = ("batch_size",)
    sample_level_dp = True
    regression = True

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, batch_size: int = 32,
                 sample_clip_norm: float | None = None,
                 sample_noise_multiplier: float = 0.0) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step)
        self.batch_size = batch_size
        self.sample_clip_norm, self.sample_noise_multiplier = sample_clip_norm, sample_noise_multiplier

    def local_batches(self, client: ClientData, generator: torch.Generator
                      ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One minibatch (`minibatches`) per local step."""
        return self.minibatches(client, self.local_steps, generator)

    def minibatches(self, client: ClientData, steps: int, generator: torch.Generator
                    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """`steps` minibatches of `batch_size` of the client's examples, each drawn without
        replacement (all steps' draws in one call), and their mask: a client with fewer
        examples is padded with masked-out zeros, so every client's batches have the same shape
        (cohorts stack); with sample-level DP, each with its noise."""
        if not self.rates and int(client.y.max()) >= self.model.head.out_features:
            raise ValueError(f"fedavg needs global labels in 0..{self.model.head.out_features - 1}"
                             f", got label {int(client.y.max())}")
        n, size = len(client), self.batch_size
        picks = torch.rand(steps, n, generator=generator).argsort(1)[:, :size]
        x, y = as_float_input(client.x[picks]), client.y[picks]  # [steps, min(n, size), ...]
        mask = torch.ones(size)
        if n < size:
            x = torch.cat([x, x.new_zeros(steps, size - n, *x.shape[2:])], 1)
            y = torch.cat([y, y.new_zeros(steps, size - n)], 1)
            mask[n:] = 0
        if self.sample_clip_norm is None:
            return [(x[step], y[step], mask) for step in range(steps)]
        shapes = [(k, v.shape, v.dtype) for k, v in self.model.named_parameters()]
        return [(x[step], y[step], mask,
                 {k: torch.randn(shape, generator=generator, dtype=dtype)
                  for k, shape, dtype in shapes})
                for step in range(steps)]

    def masked_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
        """Mean `criterion` over the unmasked examples."""
        losses = self.criterion(self.forward(params, x), y, reduction="none")
        return (losses * mask).sum() / mask.sum()

    def local_gradient(self, params: Params, batch: tuple) -> tuple[Params, torch.Tensor]:
        """The minibatch's gradient or, with sample-level DP, DP-SGD's (each example on its
        own, so batch norm normalizes within an example); its noise comes with the batch."""
        if self.sample_clip_norm is None:
            return grad_and_value(self.masked_loss)(params, *batch)
        return private_gradient(self.example_loss, params, *batch[:3], self.sample_clip_norm,
                                self.sample_noise_multiplier, batch[3])

    def example_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(params, x.unsqueeze(0), y.unsqueeze(0))

    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Any:
        if self.sampler.shared_labels:  # the dataset's labels (or ratings): as it is
            return params
        return prototypes(self.features(params, support_x), support_y)

    def personal_correct(self, params: Params, state: Params, support: ClientData,
                         query: ClientData, shots: int,
                         generator: torch.Generator) -> torch.Tensor:
        """The client's personal model's prediction of each of its held-out examples."""
        model = self.tuned(self.personal_model(params, state), support, shots, generator)
        with torch.no_grad():
            predicted = self.forward(model, self.on_device(as_float_input(query.x))).argmax(-1)
        return predicted.cpu() == query.y

    def tuned(self, model: Params, support: ClientData, shots: int,
              generator: torch.Generator) -> Params:
        """The model a client predicts its held-out examples with: `model` as it is."""
        return model

    def query_logits(self, params: Params, state: Any, query_x: torch.Tensor) -> torch.Tensor:
        if self.sampler.shared_labels:
            return self.forward(state, query_x)
        return prototype_logits(self.features(params, query_x), state)


class FedAvgFT(FedAvg):
    """FedAvg training; meta-test by fine-tuning a fresh N-way head and the body."""

    hyperparameters = ("batch_size", "finetune_steps", "finetune_lr")
    adaptation = ("finetune_steps", "finetune_lr")
    adaptation_rate = "finetune_lr"

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, batch_size: int = 32,
                 finetune_steps: int = 50, finetune_lr: float = 0.01,
                 **sample_privacy: float | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step,
                         batch_size=batch_size, **sample_privacy)
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr

    def adapt(self, params: Params, support_x: torch.Tensor, support_y: torch.Tensor) -> Any:
        fresh = (params if self.sampler.shared_labels
                 else self.fresh_head(params, int(support_y.max()) + 1))
        tuned, _ = sgd_steps(lambda p: self.loss(p, support_x, support_y), fresh,
                             self.finetune_lr, self.finetune_steps)
        return tuned

    @staticmethod
    def fresh_head(params: Params, ways: int) -> Params:
        """`params` with a zero `ways`-way head."""
        weight = params["head.weight"]
        return {**params, "head.weight": weight.new_zeros(ways, weight.shape[1]),
                "head.bias": weight.new_zeros(ways)}

    def query_logits(self, params: Params, state: Any, query_x: torch.Tensor) -> torch.Tensor:
        return self.forward(state, query_x)

    def tuned(self, model: Params, support: ClientData, shots: int,
              generator: torch.Generator) -> Params:
        """`model`, head included, after the fine-tuning steps on up to `shots` of the client's
        own examples of each class (global labels)."""
        x, labels, classes = own_shots(support, shots, generator)
        x, y = self.on_device((x, classes[labels]))
        tuned, _ = sgd_steps(lambda p: self.loss(p, x, y), model,
                             self.finetune_lr, self.finetune_steps)
        return detached(tuned)
