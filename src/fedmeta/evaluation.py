"""Meta-testing on clients never seen in training: adapt on each episode's support set, score
its query set; mean accuracy with a 95% confidence interval over episodes, and the
distribution of per-client accuracy (mean, 10th percentile)."""

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fedmeta.data import Episodes, EpisodeSampler, FederatedDataset, episodes_from_arrays
from fedmeta.errors import UserError
from fedmeta.learners.base import Learner
from fedmeta.params import Params


@dataclass(frozen=True)
class MetaTestResult:
    accuracy: float
    ci95: float
    episodes: int
    clients: int
    client_mean: float
    client_p10: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

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


def load_episodes(path: Path) -> Episodes:
    """Episodes from an npz with `support_x` [E,S,H,W] (uint8 0-255 or float), `support_y`
    [E,S], `query_x` [E,Q,H,W] and `query_y` [E,Q], validated."""
    keys = ("support_x", "support_y", "query_x", "query_y")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in keys if k not in arrays.files]
            if missing:
                raise UserError(f"{path}: missing arrays {', '.join(missing)}")
            return episodes_from_arrays(*(arrays[k] for k in keys))
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: {error}") from None


def meta_test(learner: Learner, params: Params, dataset: FederatedDataset,
              sampler: EpisodeSampler, episodes: int,
              generator: torch.Generator) -> MetaTestResult:
    """Accuracy over `episodes` episodes drawn from uniformly chosen eligible clients."""
    clients = {i: dataset.client(i) for i in range(dataset.num_clients)}
    eligible = [i for i, data in clients.items() if sampler.eligible(data)]
    if not eligible:
        raise UserError(f"no test client of {dataset.name} has enough data for "
                        f"{sampler.ways}-way {sampler.shots}-shot {sampler.queries}-query episodes")
    choice = torch.randint(len(eligible), (episodes,), generator=generator)
    per_episode, per_client = [], []
    for slot, count in zip(*torch.unique(choice, return_counts=True)):
        batch = sampler.sample(clients[eligible[slot]], int(count), generator)
        accuracy = learner.accuracy(params, batch)
        per_episode.append(accuracy)
        per_client.append(float(accuracy.mean()))
    accuracy, ci95 = mean_ci95(torch.cat(per_episode))
    return MetaTestResult(accuracy, ci95, episodes, len(per_client),
                          float(np.mean(per_client)), float(np.percentile(per_client, 10)))
