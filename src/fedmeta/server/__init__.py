"""Server-side pipeline: aggregators and server optimizers composed with `chain`."""

from fedmeta.server.aggregate import weighted_mean
from fedmeta.server.chain import Round, Stage, chain, named_chain, stateless
from fedmeta.server.optimizer import server_optimizer

__all__ = ["Round", "Stage", "chain", "named_chain", "stateless", "server_optimizer",
           "weighted_mean"]
