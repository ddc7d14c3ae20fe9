"""FedBN (Li, Jiang, Zhang, Kamp, Dou 2021, "FedBN: Federated Learning on Non-IID Features via
Local Batch Normalization"): FedAvg on every layer but batch normalization, whose affine
params each client keeps (fedmeta's batch norm keeps no running statistics: it normalizes by
the batch's, in training and evaluation alike). Needs a model with batch norm."""

from torch import nn

from fedmeta.data import EpisodeSampler
from fedmeta.learners.local_layers import LocalLayers
from fedmeta.optim import Transform


class FedBN(LocalLayers):
    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1,
                 **settings: float | int | None) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step,
                         **settings)
        self.norms = {f"{name}.{param}" for name, module in model.named_modules()
                      if isinstance(module, nn.modules.batchnorm._BatchNorm)
                      for param, _ in module.named_parameters()}
        if not self.norms:
            raise ValueError("fedbn keeps each client's batch norm: the model has none "
                             "(model.name = 'conv4', or model.batch_norm = true)")

    def is_local(self, name: str) -> bool:
        return name in self.norms
