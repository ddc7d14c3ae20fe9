"""One kept Omniglot model, meta-tested on two kinds of episode of the same 20 evaluation
alphabets: fedmeta's (a new client is one alphabet, so an episode's N characters are all of
one script) and the published numbers' (Vinyals et al. 2016, used by Snell et al. 2017 and
Finn et al. 2017: an episode's N characters drawn from every test alphabet pooled). The
second is what the published centralized numbers measure; the first is harder, since
characters of one script look alike. No selection happens here: the run kept its round on
its meta-validation alphabets, and each kind of episode is scored once.

    python benchmarks/mixed_alphabets.py RUN_DIR --ways 20 --shots 1 --queries 5
"""

import argparse
import json
from pathlib import Path

import torch

from fedmeta.data import ClientData, EpisodeSampler
from fedmeta.data.federated import pool
from fedmeta.engine.rundir import RunDirectory
from fedmeta.evaluation import mean_ci95
from fedmeta.resume import restore_run


def scored(learner, params, client: ClientData, sampler: EpisodeSampler, episodes: int,
           generator: torch.Generator, chunk: int = 50) -> list[float]:
    """Accuracy of each of `episodes` episodes of `client`, drawn `chunk` at a time."""
    out = []
    for start in range(0, episodes, chunk):
        batch = sampler.sample(client, min(chunk, episodes - start), generator)
        out += learner.accuracy(params, batch).tolist()
    return out


def both_protocols(run_dir: Path, ways: int, shots: int, queries: int, episodes: int = 600,
                   seed: int = 0) -> dict:
    """The kept model of the run in `run_dir` scored on `episodes` episodes within one
    held-out alphabet (as many of each) and on as many of the alphabets pooled."""
    run = RunDirectory.open(run_dir, "eval")
    experiment, _, _, _, (round_index, params, _) = restore_run(run, run.latest_checkpoint())
    test = experiment.test
    clients = [test.client(i) for i in range(test.num_clients)]
    sampler = EpisodeSampler(ways, shots, queries)
    learner = experiment.learner
    generator = torch.Generator().manual_seed(seed)
    eligible = [c for c in clients if sampler.eligible(c)]
    per_alphabet = [scored(learner, params, c, sampler, -(-episodes // len(eligible)),
                           generator) for c in eligible]
    within = mean_ci95(torch.tensor([a for scores in per_alphabet for a in scores]))
    mixed = mean_ci95(torch.tensor(scored(learner, params, pool(clients), sampler,
                                          episodes, generator)))
    return {"run": str(run_dir), "round": round_index,
            "task": f"{ways}-way {shots}-shot, {queries} queries", "alphabets": len(clients),
            "within_one_alphabet": {"accuracy": within[0], "ci95": within[1],
                                    "episodes": sum(map(len, per_alphabet))},
            "alphabets_pooled": {"accuracy": mixed[0], "ci95": mixed[1], "episodes": episodes}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(both_protocols(args.run_dir, args.ways, args.shots, args.queries,
                                    args.episodes, args.seed)))


if __name__ == "__main__":
    main()
