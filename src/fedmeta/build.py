"""From a validated `Config` to the objects a run needs: data, learner, server pipeline."""

from collections.abc import Callable
from functools import partial
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch

from fedmeta.attacks import Attack
from fedmeta.config import Config, EvalConfig, TaskConfig
from fedmeta.data import (ColdStartSampler, EpisodeSampler, FederatedDataset,
                          OwnExamplesSampler, TaskSampler, fashion_mnist_federated,
                          femnist_federated,
                          femnist_writers, hold_out_validation, load_fashion_mnist,
                          movielens_federated, movielens_users, omniglot_clients,
                          omniglot_federated, own_splits, shakespeare_federated,
                          shakespeare_roles, synthetic_federated, validation_count)
from fedmeta.engine.experiment import Experiment, build_schedule, client_sample_rate
from fedmeta.device import resolve_device
from fedmeta.engine.faults import Faults
from fedmeta.errors import UserError, config_errors
from fedmeta.evaluation import one_bit_images
from fedmeta.learners.anil import ANIL
from fedmeta.learners.base import Learner
from fedmeta.learners.fedavg import FedAvg, FedAvgFT
from fedmeta.learners.ditto import Ditto
from fedmeta.learners.fedbn import FedBN
from fedmeta.learners.fedper import FedPer
from fedmeta.learners.fedprox import FedProx
from fedmeta.learners.fedrep import FedRep
from fedmeta.learners.fomaml import FOMAML
from fedmeta.learners.hypernet import PFedHN
from fedmeta.learners.local import Local
from fedmeta.learners.maml import MAML
from fedmeta.learners.metasgd import MetaSGD
from fedmeta.learners.perfedavg import PerFedAvg, PerFedAvgHF
from fedmeta.learners.protonet import ProtoNet
from fedmeta.learners.reptile import Reptile
from fedmeta.learners.scaffold import Scaffold
from fedmeta.models import build_model
from fedmeta.optim import OPTIMIZERS, scheduled
from fedmeta.privacy.accountant import PrivacyBudget
from fedmeta.privacy.audit import CanaryAudit
from fedmeta.privacy.encryption import CkksKeys, ckks_sum
from fedmeta.privacy.secure_aggregation import secagg_sum
from fedmeta.privacy.user_level import (adaptive_clipping, adaptive_noise_split,
                                        clip_updates, gaussian_noise)
from fedmeta.server import Stage, named_chain, server_optimizer
from fedmeta.server.aggregate import Summation, mean, plain_sum
from fedmeta.server.compression import stochastic_quantization, topk_error_feedback
from fedmeta.server.pipeline import Pipeline
from fedmeta.server.robust import ROBUST_RULES, norm_bounding
from fedmeta.vertical.fewshot import femnist_pools, omniglot_pools, run_fewshot
from fedmeta.vertical.tabular import aligned_parties, run_tabular

LEARNERS: dict[str, type[Learner]] = {
    "protonet": ProtoNet, "maml": MAML, "fomaml": FOMAML, "metasgd": MetaSGD, "anil": ANIL,
    "reptile": Reptile, "perfedavg-fo": PerFedAvg, "perfedavg-hf": PerFedAvgHF,
    "fedavg": FedAvg, "fedavg-ft": FedAvgFT, "fedprox": FedProx, "pfedhn": PFedHN,
    "scaffold": Scaffold, "ditto": Ditto, "fedper": FedPer, "fedrep": FedRep, "fedbn": FedBN,
    "local": Local,
}
SYNTHETIC_TEST_CLIENTS = 100
OWN_SPLITS = ("fashion-mnist",)  # datasets whose held-out data are the training clients' own
TEXT = ("shakespeare",)  # datasets of next-character tasks (fedmeta.data.own_tasks)


def bundled_omniglot() -> Path:
    """The compact Omniglot (28x28, 1 bit per pixel, MIT license) shipped inside fedmeta."""
    return Path(str(resources.files("fedmeta") / "assets" / "omniglot_28_1bit.npz"))


class Datasets(NamedTuple):
    """A run's clients: meta-training, meta-validation and meta-test, pairwise disjoint."""

    train: FederatedDataset
    validation: FederatedDataset
    test: FederatedDataset


def check_horizontal(config: Config) -> None:
    """UserError for a vertical config where only horizontal runs go (clients, Flower)."""
    if config.federation == "vertical":
        raise UserError("a vertical config (federation = 'vertical') runs with `fedmeta run` "
                        "only: it has no clients to export, deploy or benchmark")


def build_datasets(config: Config) -> Datasets:
    """The config's clients. Omniglot, FEMNIST, Shakespeare and MovieLens hold
    `data.validation_fraction` of the training side's clients (background alphabets, training
    writers, training roles, training users) out for meta-validation;
    Synthetic generates as many more clients of a seed of their own; Fashion-MNIST's held-out
    data are its training clients' own (`own_splits`)."""
    check_horizontal(config)
    data = config.data
    if data.dataset in OWN_SPLITS:
        clients = fashion_mnist_federated(
            *load_fashion_mnist(data.path, data.download), data.num_clients, data.partition,
            data.dirichlet_beta, data.classes_per_client, seed=config.seed,
            balanced=data.balanced)
        return Datasets(*own_splits(clients, data.validation_fraction, config.seed))
    path = bundled_omniglot() if data.path == "bundled" else data.path
    if data.dataset == "synthetic":
        clients = partial(synthetic_federated, alpha=data.synthetic_alpha,
                          beta=data.synthetic_beta)
        count = validation_count(data.num_clients, data.validation_fraction)
        return Datasets(clients(data.num_clients, seed=config.seed),
                        clients(count, seed=config.seed + 2),
                        clients(SYNTHETIC_TEST_CLIENTS, seed=config.seed + 1))
    with config_errors():
        if data.dataset == "omniglot":
            background, test = omniglot_federated(
                path, partition=data.partition, num_clients=data.num_clients,
                rotations=data.rotations, seed=config.seed, download=data.download)
        elif data.dataset == "shakespeare":
            background, test = shakespeare_federated(
                path, test_fraction=data.test_fraction, seed=config.seed,
                min_samples=data.min_samples, download=data.download)
        else:
            split = movielens_federated if data.rates else femnist_federated
            background, test = split(path, test_fraction=data.test_fraction, seed=config.seed,
                                     download=data.download)
    try:
        train, validation = hold_out_validation(background, data.validation_fraction,
                                                config.seed)
    except ValueError as error:
        raise UserError(f"config error: data.validation_fraction: {error}") from None
    return Datasets(train, validation, test)


def build_new_clients(config: Config, path: Path, train: FederatedDataset) -> FederatedDataset:
    """Every client of the file at `path`, in the format of `config`'s dataset (Omniglot's
    alphabets of both its splits, FEMNIST's writers, Shakespeare's roles, MovieLens' users in
    the run's item space), preprocessed as the run's training clients `train` were (1-bit
    images stay 1-bit): new clients for `fedmeta eval --clients`."""
    data = config.data
    if data.dataset == "omniglot":
        with config_errors():
            new = omniglot_clients(path, data.partition, data.num_clients, data.rotations,
                                   config.seed)
    elif data.dataset == "femnist":
        new = femnist_writers(path)
    elif data.dataset == "shakespeare":
        new = shakespeare_roles(path, data.min_samples)
    elif data.dataset == "movielens":
        new = movielens_users(path)
    else:
        raise UserError(f"--clients takes a file of new clients (omniglot, femnist, shakespeare "
                        f"or movielens); this run's dataset is {data.dataset!r}")
    if new.input_shape != train.input_shape:
        raise UserError(f"{path}: its clients' inputs are {new.input_shape}, the run's model "
                        f"takes {train.input_shape}")
    if new.num_items != train.num_items:
        raise UserError(f"{path}: its users rate {new.num_items} movies, the run's model knows "
                        f"{train.num_items}: new users must rate in the run's item space")
    return new.one_bit() if one_bit_images(train) else new


def build_summation(config: Config) -> Summation:
    """How the aggregator sums: in the clear, or with secure aggregation's arithmetic."""
    agg = config.aggregation
    if agg.secure == "secagg+":
        return secagg_sum(agg.secagg_clipping_range, agg.secagg_quantization_range,
                          agg.secagg_modulus_range, secagg_max_weight(config), config.seed)
    if agg.secure == "ckks":
        return ckks_sum(CkksKeys.generate(agg.ckks_poly_modulus_degree, agg.ckks_scale_bits))
    return plain_sum


def secagg_max_weight(config: Config) -> float:
    """The largest coefficient a SecAgg+ client sends: `aggregation.secagg_max_weight` for the
    sample-weighted mean; 1 under DP's fixed denominator, where every coefficient is 1. Each
    client scales its vector by coefficient / max weight before quantizing it, so a max
    weight of 1000 there would cost the sum three decimal digits."""
    return 1.0 if fixed_denominator(config) else config.aggregation.secagg_max_weight


def build_compression(config: Config) -> list[Stage]:
    """The configured update compression, as stages (none without)."""
    agg = config.aggregation
    if agg.compression == "quantize-8bit":
        return [stochastic_quantization(config.seed)]
    if agg.compression == "topk":
        return [topk_error_feedback(agg.topk_fraction)]
    return []


def build_client_stage(config: Config, expected: float | None = None) -> Stage:
    """What runs on each client's update before aggregation: compression (what the client
    sends), then, on what the server decodes, norm bounding against malicious updates and
    user-level DP's clipping (to a fixed or an adaptive norm), so the bound and DP's
    sensitivity hold for what is aggregated. `expected`: the expected cohort size, which
    adaptive clipping needs (not a node's secure contribution: secure aggregation hides the
    norms adaptive clipping reads, so the config refuses the pair)."""
    privacy, bound = config.privacy, config.aggregation.norm_bound
    stages = [("compression", stage) for stage in build_compression(config)]
    if bound:
        stages.append(("norm_bound", norm_bounding(bound)))
    if privacy.adaptive_clipping:
        stages.append(("clip", adaptive_clipping(
            privacy.clip_norm, privacy.clip_quantile, privacy.clip_learning_rate,
            count_noise(config, expected), expected, config.seed)))
    elif privacy.clip_norm:
        stages.append(("clip", clip_updates(privacy.clip_norm)))
    return named_chain(*stages)


def count_noise(config: Config, expected: float) -> float:
    """Adaptive clipping's noise on the count of unclipped clients (0 without DP noise)."""
    privacy = config.privacy
    if not privacy.noise_multiplier:
        return 0.0
    return privacy.clip_count_noise or expected / 20


def fixed_denominator(config: Config) -> bool:
    """Whether the round's mean divides by a fixed number (DP-FedAvg's expected cohort, with
    user-level DP noise) rather than by the clients' total weight."""
    return bool(config.privacy.noise_multiplier)


def build_pipeline(config: Config, num_clients: int) -> Pipeline:
    """Client stages (`build_client_stage`), an aggregator, then the server optimizer: the
    sample-weighted mean or a robust rule (`aggregation.rule`), or with DP noise,
    DP-FedAvg's fixed-denominator mean and Gaussian noise."""
    server, privacy, agg = config.server, config.privacy, config.aggregation
    transform = OPTIMIZERS[server.optimizer](server.lr)
    schedule = build_schedule(server, server.rounds)
    step = server_optimizer(transform if schedule is None else scheduled(transform, schedule))
    expected = client_sample_rate(config, num_clients) * num_clients
    client = build_client_stage(config, expected)
    if agg.rule != "mean":
        return Pipeline(client, ROBUST_RULES[agg.rule](agg.byzantine_fraction), step)
    summation = build_summation(config)
    if not fixed_denominator(config):
        return Pipeline(client, mean(None, summation), step)
    sigma = privacy.noise_multiplier
    if privacy.adaptive_clipping:
        with config_errors():
            sigma = adaptive_noise_split(sigma, count_noise(config, expected))
    return Pipeline(client, mean(expected, summation),
                    named_chain(("noise", gaussian_noise(sigma, expected, config.seed)),
                                ("optimizer", step)), expected)


def build_privacy_budget(config: Config, num_clients: int) -> PrivacyBudget | None:
    """The accountant of a run with user-level DP noise (None without)."""
    privacy = config.privacy
    if not privacy.noise_multiplier:
        return None
    fixed = None
    if config.server.sampling == "uniform":
        fixed = (min(config.server.clients_per_round, num_clients), num_clients)
    budget = PrivacyBudget(privacy.noise_multiplier, client_sample_rate(config, num_clients),
                           privacy.delta, privacy.accountant, privacy.target_epsilon, fixed)
    if not budget.allows(1):
        raise UserError(f"config error: privacy.target_epsilon {privacy.target_epsilon} is "
                        f"less than one round spends ({budget.epsilon_after(1):.4g})")
    return budget


def global_labels(config: Config) -> bool:
    """Whether tasks keep the dataset's labels (text always; images and features with
    `task.labels = "global"`) rather than each episode's own 0..N-1."""
    return config.data.dataset in TEXT or config.task.labels == "global"


def global_label_tasks(config: Config) -> str:
    """What a config's `global_labels` tasks are, in words (for one-line refusals)."""
    if config.data.dataset in TEXT:
        return f"next-character tasks ({config.data.dataset}), whose labels are one vocabulary"
    return "tasks with the dataset's labels (task.labels = 'global')"


def head_size(config: Config, kind: str, num_classes: int) -> int | None:
    """Outputs of the model's head for a learner whose `head` is `kind` (None: no head). With
    `global_labels` every task's labels are the dataset's, so every head has `num_classes`
    outputs."""
    if global_labels(config):
        return num_classes
    if kind == "ways" and config.eval.ways != config.task.ways:
        raise UserError(f"config error: {config.learner.algorithm} meta-learns a "
                        f"{config.task.ways}-way head, so eval.ways must equal task.ways "
                        f"(got {config.eval.ways})")
    return {"none": None, "ways": config.task.ways, "global": num_classes}[kind]


def check_supported(config: Config, cls: type[Learner]) -> None:
    """UserError if the config asks of learner `cls` what it does not declare it supports:
    sample-level DP (`sample_level_dp`), or hiding or reshaping each client's update from a
    `personalized` learner, whose server step needs every one."""
    name, agg = config.learner.algorithm, config.aggregation
    if config.privacy.sample_clip_norm and not cls.sample_level_dp:
        supported = sorted(k for k, c in LEARNERS.items() if c.sample_level_dp)
        raise UserError(f"config error: sample-level DP-SGD (privacy.sample_clip_norm) needs a "
                        f"local loss that is a mean over examples ({', '.join(supported)}); "
                        f"learner.algorithm is {name!r}")
    if cls.plain_sgd and (config.learner.optimizer, config.server.optimizer, config.server.lr,
                          config.server.lr_schedule) != ("sgd", "sgd", 1.0, "constant"):
        raise UserError(f"config error: {name}'s control variates assume plain SGD on the "
                        "clients and the server's step x += mean delta: it needs "
                        "learner.optimizer = 'sgd', server.optimizer = 'sgd', server.lr = 1 "
                        "and server.lr_schedule = 'constant'")
    if cls.plain_sgd and (agg.rule != "mean" or agg.compression != "none" or agg.norm_bound
                          or agg.secure != "none" or config.privacy.clip_norm
                          or config.privacy.noise_multiplier or config.privacy.canaries):
        raise UserError(f"config error: {name}'s server keeps its control variate the mean of "
                        "the clients' only from their updates as sent: aggregation.rule = "
                        "'mean', no compression, norm_bound, secure aggregation, user-level DP "
                        "or canaries")
    if global_labels(config) and not cls.global_label_tasks:
        supported = sorted(k for k, c in LEARNERS.items() if c.global_label_tasks)
        raise UserError(f"config error: {name} does not learn {global_label_tasks(config)} "
                        f"({', '.join(supported)} do)")
    if global_labels(config) and config.eval.personalization_episodes:
        raise UserError("config error: a client's own examples are its tasks already (a text "
                        "client's support before its split, query after; a writer's LEAF "
                        "split): set eval.personalization_episodes = 0")
    if config.data.rates and not rates_new_users(cls):
        supported = sorted(k for k, c in LEARNERS.items() if rates_new_users(c))
        raise UserError(f"config error: {config.data.dataset}'s new users are predicted by a "
                        f"shared model adapted on their first ratings, or fit their personal "
                        f"params there ({', '.join(supported)}); learner.algorithm is {name!r}")
    if config.model.batch_norm and config.privacy.sample_clip_norm:
        raise UserError("config error: sample-level DP-SGD runs each example on its own, which "
                        "model.batch_norm cannot normalize: set model.batch_norm = false")
    if cls.personalized and (agg.rule, agg.secure, agg.compression) != ("mean", "none", "none"):
        raise UserError(f"config error: {name} turns each client's update into its own update "
                        "on the server: it needs aggregation.rule = 'mean', secure = 'none' "
                        "and compression = 'none'")


def check_poolable(config: Config, option: str = "config error: eval.pooled") -> None:
    """UserError (naming `option`) unless the config's held-out tasks are N-way episodes of
    held-out clients, which can be drawn from those clients pooled into one."""
    if config.data.dataset in OWN_SPLITS or global_labels(config) or config.data.rates:
        raise UserError(f"{option} draws N-way episodes from the held-out clients pooled into "
                        "one; this run's held-out tasks are not N-way episodes of held-out "
                        "clients")


def rates_new_users(cls: type[Learner]) -> bool:
    """Whether learner `cls` predicts a new user's ratings: it trains rating models and keeps
    no personal state, or fits a new user's (`fits_new_state`)."""
    return cls.regression and (not cls.keeps_state or cls.fits_new_state)


def check_deployable(config: Config) -> None:
    """UserError for what a deployment cannot do: local-only training (nothing to deploy),
    or episodes of held-out clients pooled (their data stay on their nodes)."""
    algorithm = config.learner.algorithm
    if algorithm == "local":
        raise UserError("local-only clients send nothing: there is nothing to deploy "
                        "(`fedmeta run` gives the local-only reference)")
    if config.eval.pooled:
        raise UserError("eval.pooled draws episodes from the held-out clients' data pooled in "
                        "one place, which a deployment's nodes keep apart: set eval.pooled = "
                        "false, and score a pooled benchmark with `fedmeta eval --pooled`")


def sample_privacy(config: Config) -> dict[str, float]:
    """The DP-SGD settings a `sample_level_dp` learner takes (none unless configured)."""
    privacy = config.privacy
    if privacy.sample_clip_norm is None:
        return {}
    return {"sample_clip_norm": privacy.sample_clip_norm,
            "sample_noise_multiplier": privacy.sample_noise_multiplier}


def episode_sampler(config: Config, section: TaskConfig | EvalConfig) -> TaskSampler:
    """The tasks `section` (`task`: training's, `eval`: held-out clients') describes: `ways`
    classes of `shots` support and `queries` query examples; with `global_labels` a client's
    own `shots` support and `queries` query examples; on ratings a user's first `shots`
    ratings and `queries` later ones."""
    if config.data.rates:
        return ColdStartSampler(section.shots, section.queries)
    if global_labels(config):
        return OwnExamplesSampler(section.shots, section.queries)
    return EpisodeSampler(section.ways, section.shots, section.queries)


def build_learner(config: Config, input_shape: tuple[int, ...], num_classes: int,
                  num_clients: int = 1, device: str | None = None,
                  num_items: int = 0) -> Learner:
    """The configured learner for inputs of `input_shape` and data of `num_classes` global
    classes, `num_items` items (a rating model's) and `num_clients` training clients (pfedhn's
    embeddings), its model initialized
    from `config.seed` (on the CPU, so the same on every device), then moved to `device`
    (None: `run.device`)."""
    torch_device = resolve_device(device or config.run.device)
    torch.manual_seed(config.seed)
    task, learner_config = config.task, config.learner
    cls = LEARNERS[learner_config.algorithm]
    check_supported(config, cls)
    with config_errors():
        model = build_model(config.model.name, tuple(input_shape),
                            head_size(config, cls.head, num_classes), config.model.hidden,
                            config.model.batch_norm, num_items, config.model.embedding)
        learner = cls(
            model, episode_sampler(config, task),
            OPTIMIZERS[learner_config.optimizer](learner_config.lr),
            local_steps=learner_config.local_steps, tasks_per_step=learner_config.tasks_per_step,
            **{key: getattr(learner_config, key) for key in cls.hyperparameters},
            **sample_privacy(config),
            **({"num_clients": num_clients} if cls.takes_num_clients else {}))
    return learner.to(torch_device)


def build_vertical(config: Config) -> Callable[[], tuple[dict, list[dict]]]:
    """A vertical run of `config`, ready to go: tabular parties already read and aligned (so
    bad parties fail before a run directory exists). Called, it returns the run's summary
    and each repeat's results."""
    if config.vertical.data == "omniglot-strips":
        return partial(run_fewshot, config, omniglot_pools(bundled_omniglot()))
    if config.vertical.data == "femnist-strips":
        with config_errors():
            return partial(run_fewshot, config, femnist_pools(config.vertical.path, config.seed))
    return partial(run_tabular, config, aligned_parties(config))


def build_experiment(config: Config, datasets: Datasets | None = None) -> Experiment:
    """The experiment of `config`, on `datasets` if given, else the config's."""
    check_horizontal(config)
    check_supported(config, LEARNERS[config.learner.algorithm])  # before any data is read
    if config.eval.pooled:
        check_poolable(config)
    train, validation, test = datasets or build_datasets(config)
    learner = build_learner(config, train.input_shape, train.num_classes, train.num_clients,
                            num_items=train.num_items)
    ev = config.eval
    privacy, audit = config.privacy, None
    if privacy.canaries:
        audit = CanaryAudit(learner.init_params(), privacy.canaries,
                            privacy.canary_norm or privacy.clip_norm or 1.0,
                            client_sample_rate(config, train.num_clients), config.seed)
    return Experiment(config, train, validation, test, learner,
                      build_pipeline(config, train.num_clients),
                      episode_sampler(config, ev),
                      build_privacy_budget(config, train.num_clients), audit,
                      Attack.from_config(config, train.num_clients), Faults.from_config(config),
                      "splits" if config.data.dataset in OWN_SPLITS else "clients")
