"""Meta-testing on clients never seen in training: adapt on each episode's support set, score
its query set; mean accuracy with a 95% confidence interval over episodes, and the
distribution of per-client accuracy (each client's, their mean and 10th percentile)."""

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedmeta.data import (ClientData, Episodes, FederatedDataset, TaskSampler,
                          as_float_input, episodes_from_arrays, split_support_query)
from fedmeta.data.npz import data_error, load_npz
from fedmeta.errors import UserError
from fedmeta.learners.base import Learner
from fedmeta.params import Params, table_rows
from fedmeta.seeding import seeded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaTestResult:
    accuracy: float
    ci95: float
    episodes: int
    clients: int
    client_mean: float
    client_p10: float
    per_client_accuracy: tuple[float, ...]  # each evaluated client's mean over its episodes
    # of how many held-out clients, how many could supply the episodes (None: not counted)
    held_out_clients: int | None = None
    eligible_clients: int | None = None

    def as_dict(self, per_client: bool = False) -> dict[str, Any]:
        """The result's fields (those not counted left out); `per_client_accuracy` (one float
        per client) only if asked."""
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        if not per_client:
            del fields["per_client_accuracy"]
        return fields

    def __str__(self) -> str:
        return (f"{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f}% (95% CI, "
                f"{self.episodes} episodes, {self.clients} clients; "
                f"per-client p10 {100 * self.client_p10:.1f}%)")


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    values = values.double()
    if values.numel() < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std() / values.numel() ** 0.5)


def personal_classes(support: ClientData, query: ClientData, shots: int) -> torch.Tensor:
    """The classes of a client's query split with at least `shots` support examples."""
    if len(support) == 0 or len(query) == 0:
        return torch.zeros(0, dtype=torch.int64)
    support_counts = torch.bincount(support.y)
    in_query = torch.unique(query.y)
    eligible = in_query[in_query < len(support_counts)]
    return eligible[support_counts[eligible] >= shots]


def personalization_episode(support: ClientData, query: ClientData, ways: int, shots: int,
                            generator: torch.Generator) -> Episodes | None:
    """An N-way K-shot episode whose support comes from a client's own support split and whose
    query is every example of its query split in the chosen classes (None: too few classes)."""
    eligible = personal_classes(support, query, shots)
    if len(eligible) < ways:
        return None
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[:ways]].sort().values
    support_counts = torch.bincount(support.y)
    support_index = torch.cat([
        torch.nonzero(support.y == c).flatten()[
            torch.randperm(int(support_counts[c]), generator=generator)[:shots]]
        for c in chosen.tolist()])
    query_index = torch.nonzero(torch.isin(query.y, chosen)).flatten()
    return Episodes(as_float_input(support.x[support_index]).unsqueeze(0),
                    torch.searchsorted(chosen, support.y[support_index]).unsqueeze(0),
                    as_float_input(query.x[query_index]).unsqueeze(0),
                    torch.searchsorted(chosen, query.y[query_index]).unsqueeze(0))


def personal_splits(clients: Sequence[ClientData], ways: int,
                    shots: int) -> list[tuple[ClientData, ClientData]]:
    """(support, query) splits of the clients that can be personalized: their own split (its
    `query_mask`, e.g. LEAF's train split, or a 20% stratified split) holds `ways` classes with
    `shots` support and one query example. UserError if no client's does."""
    splits = [split_support_query(client, 0.2, seed=i) for i, client in enumerate(clients)]
    splits = [(s, q) for s, q in splits if len(personal_classes(s, q, shots)) >= ways]
    if not splits:
        raise UserError(f"no held-out client has {ways} classes with {shots} support "
                        "and one query example")
    return splits


def personalize(learner: Learner, params: Params, clients: Sequence[ClientData], ways: int,
                shots: int, episodes_per_client: int, generator: torch.Generator) -> MetaTestResult:
    """Personalization of held-out clients: adapt on each client's own support split, score its
    query split (`personal_splits`)."""
    per_episode, per_client = [], []
    for support, query in personal_splits(clients, ways, shots):
        accuracy = torch.cat([
            learner.accuracy(params, personalization_episode(support, query, ways, shots,
                                                             generator))
            for _ in range(episodes_per_client)])
        per_episode.append(accuracy)
        per_client.append(float(accuracy.mean()))
    return summarize(per_episode, per_client)


def summarize(per_episode: list[torch.Tensor], per_client: list[float]) -> MetaTestResult:
    accuracy, ci95 = mean_ci95(torch.cat(per_episode))
    return MetaTestResult(accuracy, ci95, sum(len(a) for a in per_episode), len(per_client),
                          float(np.mean(per_client)), float(np.percentile(per_client, 10)),
                          tuple(per_client))


def own_split_test(learner: Learner, params: Params, states: Params | None,
                   train: FederatedDataset, held: FederatedDataset, shots: int,
                   keys: tuple[int, ...]) -> tuple[MetaTestResult, float]:
    """PFLlib's personalized-FL metric: each training client scores its own held-out examples
    (client i of `held`) with what it learned: the params the server sends it
    (`Learner.client_params`: its own generated model under pFedHN), its personal state in
    `states` (the table of `fedmeta.engine.client_state`) and its own training examples
    (client i of `train`, up to `shots` a class where it adapts: `Learner.personal_correct`,
    drawn from client i's own stream, `seeded(*keys, i)`, so a client scores the same whoever
    else is scored, and wherever it is). Returns the mean over clients of each one's accuracy,
    with a 95% CI over clients (`episodes`: the examples scored), and the pooled accuracy
    (all clients' examples together, the number PFLlib's code prints)."""
    if learner.keeps_state and states is None:
        raise ValueError("own_split_test needs the personal states of a learner that keeps them")
    clients = [i for i in range(held.num_clients) if held.client_size(i)]
    return own_split_result([
        learner.personal_correct(own_params(learner, params, i), state, train.client(i),
                                 held.client(i), shots, seeded(*keys, i))
        for i, state in zip(clients, table_rows(states, clients))])


def own_split_result(correct: Sequence[torch.Tensor]) -> tuple[MetaTestResult, float]:
    """`own_split_test`'s result from which held-out examples each scored client got right
    (bool [n_i] each), wherever they were scored."""
    if not correct:
        raise UserError("no training client holds held-out examples to score")
    per_client = torch.stack([c.float().mean() for c in correct])
    accuracy, ci95 = mean_ci95(per_client)
    result = MetaTestResult(accuracy, ci95, sum(len(c) for c in correct), len(correct),
                            accuracy, float(np.percentile(per_client.numpy(), 10)),
                            tuple(per_client.tolist()))
    return result, float(torch.cat(correct).float().mean())


def own_params(learner: Learner, params: Params, client: int) -> Params:
    """What the server sends training client `client` (`Learner.client_params`)."""
    sent = learner.client_params(params, torch.tensor([client], dtype=torch.int64))
    return {k: v[0] for k, v in sent.items()}


def one_bit_images(dataset: FederatedDataset) -> bool:
    """Whether `dataset` trains on 1-bit images (uint8 holding only 0 and 255, as the bundled
    Omniglot), judged on its first client."""
    if not dataset.num_clients:
        return False
    x = dataset.client(0).x
    return x.dtype == torch.uint8 and bool(((x == 0) | (x == 255)).all())


def binarized(episodes: Episodes) -> Episodes:
    """Episodes with their inputs (floats in [0, 1]) thresholded at one half: what a model
    trained on 1-bit images was trained on, so grayscale episodes score as their 1-bit
    version does."""
    return Episodes((episodes.support_x >= 0.5).float(), episodes.support_y,
                    (episodes.query_x >= 0.5).float(), episodes.query_y)


def load_episodes(path: Path) -> Episodes:
    """Episodes from an npz with `support_x` [E,S,H,W] (uint8 0-255 or float), `support_y`
    [E,S], `query_x` [E,Q,H,W] and `query_y` [E,Q], validated."""
    arrays = load_npz(path, ("support_x", "support_y", "query_x", "query_y"))
    try:
        return episodes_from_arrays(**arrays)
    except ValueError as error:
        raise data_error(path, str(error)) from None


def eligible_clients(clients: Sequence[ClientData],
                     sampler: TaskSampler) -> list[ClientData]:
    """The clients that can supply `sampler`'s episodes; UserError if none can, a warning if
    only a minority can (the others are not evaluated)."""
    eligible = [client for client in clients if sampler.eligible(client)]
    shape = str(sampler)
    if not eligible:
        raise UserError(f"no held-out client has enough data for {shape}")
    if 2 * len(eligible) < len(clients):
        log.warning("only %d of %d held-out clients have enough data for %s; the others are "
                    "not evaluated (fewer eval.ways, eval.shots or eval.queries admit more)",
                    len(eligible), len(clients), shape)
    return eligible


def meta_test(learner: Learner, params: Params, clients: Sequence[ClientData],
              sampler: TaskSampler, episodes: int,
              generator: torch.Generator) -> MetaTestResult:
    """Accuracy over `episodes` episodes drawn from uniformly chosen eligible clients, with how
    many of the held-out `clients` were eligible."""
    eligible = eligible_clients(clients, sampler)
    choice = torch.randint(len(eligible), (episodes,), generator=generator)
    per_episode, per_client = [], []
    for slot, count in zip(*torch.unique(choice, return_counts=True)):
        batch = sampler.sample(eligible[slot], int(count), generator)
        accuracy = learner.accuracy(params, batch)
        per_episode.append(accuracy)
        per_client.append(float(accuracy.mean()))
    return replace(summarize(per_episode, per_client), held_out_clients=len(clients),
                   eligible_clients=len(eligible))
