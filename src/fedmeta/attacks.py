"""Simulated malicious clients, to measure what an aggregator withstands.

A fixed `fraction` of the training clients, drawn once from the seed, is malicious. Whenever
one is sampled it attacks in one of four ways:

- "label-flip" (data poisoning; Biggio, Nelson, Laskov 2012; Tolpegin et al. 2020): it trains
  on flipped labels, y -> L - 1 - y. A learner with a global head (FedAvg) flips the client's
  global labels; an episodic learner, which relabels classes in every episode (so a consistent
  renaming would change nothing), flips its episodes' query labels against their support;
- "scaling" (model replacement; Bagdasaryan et al. 2020, "How To Backdoor Federated
  Learning"): it trains on flipped labels and boosts its update by `boost` (by default the
  cohort size n, the factor n / eta that replaces the global model when eta = 1);
- "sign-flip": it sends -`boost` x its honest update;
- "gaussian" (Blanchard et al. 2017): it sends N(0, `noise_std`^2) noise in every coordinate.
"""

import copy
from dataclasses import dataclass, replace

import torch

from fedmeta.config import Config
from fedmeta.data import ClientData, EpisodeSampler, Episodes
from fedmeta.seeding import ATTACK_STREAM, normal_like, seeded
from fedmeta.learners.base import Learner
from fedmeta.params import Params

POISONED_DATA = ("label-flip", "scaling")


class FlippedQueries(EpisodeSampler):
    """Episodes whose query labels are flipped (l -> ways - 1 - l) against their support."""

    def sample(self, client: ClientData, num_episodes: int,
               generator: torch.Generator) -> Episodes:
        episodes = super().sample(client, num_episodes, generator)
        return replace(episodes, query_y=self.ways - 1 - episodes.query_y)


def label_flipped(learner: Learner) -> Learner:
    """A copy of `learner` that draws label-flipped episodes (same model and optimizer)."""
    poisoned = copy.copy(learner)
    sampler = learner.sampler
    poisoned.sampler = FlippedQueries(sampler.ways, sampler.shots, sampler.queries)
    return poisoned


def flipped_labels(client: ClientData, num_labels: int) -> ClientData:
    """The client's examples with global labels y -> num_labels - 1 - y."""
    return replace(client, y=num_labels - 1 - client.y)


@dataclass(frozen=True)
class Attack:
    kind: str
    malicious: torch.Tensor  # bool [training clients]
    boost: float
    noise_std: float
    seed: int

    @classmethod
    def from_config(cls, config: Config, num_clients: int) -> "Attack | None":
        """The configured attack on a federation of `num_clients` (None without one): the
        malicious clients are the first round(fraction x N) of a permutation drawn from the seed."""
        attack = config.attack
        if attack.kind == "none":
            return None
        count = round(attack.fraction * num_clients)
        malicious = torch.zeros(num_clients, dtype=torch.bool)
        malicious[torch.randperm(num_clients, generator=seeded(config.seed, ATTACK_STREAM))
                  [:count]] = True
        return cls(attack.kind, malicious, attack.boost or float(config.server.clients_per_round),
                   attack.noise_std, config.seed)

    def is_malicious(self, client_id: int) -> bool:
        return bool(self.malicious[client_id])

    def poison(self, learner: Learner, client: ClientData,
               num_labels: int) -> tuple[Learner, ClientData]:
        """The learner and data a malicious client trains with."""
        if self.kind not in POISONED_DATA:
            return learner, client
        if learner.head == "global" or learner.sampler.shared_labels:  # the dataset's labels
            return learner, flipped_labels(client, num_labels)
        return label_flipped(learner), client

    def corrupt(self, deltas: Params, malicious: torch.Tensor, round_index: int) -> Params:
        """The updates sent: rows where `malicious` (bool [C]) is set replaced as the attack
        does; the Gaussian attack's noise drawn from (seed, round)."""
        rows = torch.nonzero(malicious).flatten()
        if not len(rows) or self.kind == "label-flip":
            return deltas
        generator = seeded(self.seed, ATTACK_STREAM, round_index)
        corrupted = {}
        for k, v in deltas.items():
            rows = rows.to(v.device)
            if self.kind == "gaussian":
                sent = self.noise_std * normal_like(v[rows], generator)
            else:
                sent = v[rows] * (-self.boost if self.kind == "sign-flip" else self.boost)
            corrupted[k] = v.index_copy(0, rows, sent)
        return corrupted
