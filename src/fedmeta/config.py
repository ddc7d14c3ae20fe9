"""Experiment configuration: TOML files validated by pydantic, with `--set a.b=value` overrides.

Every key is checked: unknown keys, wrong types and out-of-range values (nan and inf included;
every count has an upper bound, so no absurd size reaches an allocation) raise `UserError` with
one line naming the key.
"""

import importlib.util
import re
import reprlib
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedmeta.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class DataConfig(Section):
    # fashion-mnist: PFLlib's personalized-FL benchmark, held-out data the training clients'
    # own (75/25 train/test each; validation_fraction of each train part for validation)
    # shakespeare: LEAF's, a client per role, next-character tasks (model.name = "char-lstm")
    # movielens: each user a client, cold-start rating prediction (MeLU): a new user's support
    # its first eval.shots ratings in time, its query the rest (model.name = "melu")
    dataset: Literal["omniglot", "femnist", "synthetic", "fashion-mnist", "shakespeare",
                     "movielens"] = "omniglot"
    # a local file; "bundled" = the compact Omniglot inside the package
    path: str | None = Field(None, min_length=1)
    download: bool = False
    # omniglot: alphabet, drawer, random; fashion-mnist: dirichlet (its default), pathological
    partition: Literal["alphabet", "drawer", "random", "dirichlet", "pathological"] = "alphabet"
    num_clients: int | None = Field(None, ge=1, le=10**7)  # fashion-mnist: 20 by default
    dirichlet_beta: float = Field(0.1, gt=0, le=1000)  # label skew of "dirichlet"
    classes_per_client: int = Field(2, ge=1, le=10)  # of "pathological"
    # of "pathological": a class's examples in near-equal parts to its clients; false: in
    # PFLlib's unbalanced amounts (its generator's default, as its README's commands run it)
    balanced: bool = True
    rotations: bool = False
    test_fraction: float = Field(0.2, gt=0, lt=1)
    # shakespeare: a role is a client when its text gives at least this many samples before
    # its split (support) and after it (query); LEAF's minimum samples per user
    min_samples: int = Field(1, ge=1, le=10**7)
    # of the training side's clients, held out for meta-validation (rounded up); 0 = none, and
    # then no evaluation during training and no early stopping
    validation_fraction: float = Field(0.15, ge=0, lt=1)
    synthetic_alpha: float = Field(1.0, ge=0, le=1000)
    synthetic_beta: float = Field(1.0, ge=0, le=1000)

    @property
    def rates(self) -> bool:
        """Whether the clients hold ratings (a regression task) rather than labeled examples."""
        return self.dataset == "movielens"

    @model_validator(mode="after")
    def _complete(self) -> "DataConfig":
        """The client count where the clients are made up, and the bundled file for the
        dataset it holds."""
        if self.partition == "random" and self.num_clients is None:
            raise ValueError("data.num_clients is required with data.partition = 'random'")
        if self.path == "bundled" and self.dataset != "omniglot":
            raise ValueError("data.path = 'bundled' is the bundled Omniglot; "
                             f"data.dataset is {self.dataset!r}")
        if self.dataset == "synthetic" and self.num_clients is None:
            raise ValueError("data.num_clients is required with data.dataset = 'synthetic'")
        if self.dataset == "fashion-mnist":
            if "partition" not in self.model_fields_set:
                self.partition = "dirichlet"
            if self.partition not in ("dirichlet", "pathological"):
                raise ValueError("data.partition of fashion-mnist is 'dirichlet' or "
                                 f"'pathological', got {self.partition!r}")
            if self.num_clients is None:
                self.num_clients = 20
        elif self.partition in ("dirichlet", "pathological"):
            raise ValueError(f"data.partition = {self.partition!r} partitions fashion-mnist; "
                             f"data.dataset is {self.dataset!r}")
        if not self.balanced and self.partition != "pathological":
            raise ValueError("data.balanced = false sets the amounts of data.partition = "
                             f"'pathological'; data.partition is {self.partition!r}")
        return self


class TaskConfig(Section):
    ways: int = Field(5, ge=2, le=1000)
    # movielens: a training user's episode, its first `shots` ratings and `queries` later ones
    shots: int = Field(1, ge=1, le=1000)
    queries: int = Field(5, ge=1, le=1000)
    # "episode": `ways` classes relabelled 0..ways-1 a task (few-shot episodes); "global": a
    # task is `shots` + `queries` of a client's own examples with the dataset's labels
    # (Per-FedAvg's minibatches; LEAF's split where a client has one) for training and held-out
    # clients alike, and every head has the dataset's classes: for datasets whose held-out
    # clients share the training classes (GLOBAL_LABELS); text tasks are always so
    labels: Literal["episode", "global"] = "episode"


class ModelConfig(Section):
    # char-lstm: LEAF's character model (shakespeare); rating models (movielens): melu, MeLU's;
    # mf, matrix factorization whose user side is personal (fedmeta.models.mf)
    name: Literal["conv4", "cnn", "mlp", "char-lstm", "melu", "mf"] = "conv4"
    # conv4: channels; mlp: each layer's units; cnn: its fully connected layer's (PFLlib's 512);
    # char-lstm: each LSTM layer's units (LEAF's 256)
    hidden: int = Field(64, ge=1, le=4096)
    embedding: int = Field(32, ge=1, le=4096)  # melu: each embedding's width; mf: the factors'
    # mlp, cnn: batch norm after each hidden layer or convolution (conv4 always has it)
    batch_norm: bool = False


class Scheduled(Section):
    """A section's `lr` by round: "step" multiplies it by `lr_decay` every `lr_decay_every`
    rounds, "cosine" takes it from 1x to 0 over `server.rounds` rounds."""

    lr_schedule: Literal["constant", "step", "cosine"] = "constant"
    lr_decay_every: int = Field(100, ge=1, le=10**7)
    lr_decay: float = Field(0.5, gt=0, le=1)


class LearnerConfig(Scheduled):
    algorithm: Literal["protonet", "maml", "fomaml", "metasgd", "anil", "reptile",
                       "perfedavg-fo", "perfedavg-hf", "fedavg", "fedavg-ft", "fedprox",
                       "pfedhn", "scaffold", "ditto", "fedper", "fedrep", "fedbn",
                       "local"] = "protonet"
    local_steps: int = Field(1, ge=1, le=1000)
    tasks_per_step: int = Field(1, ge=1, le=1000)
    optimizer: Literal["sgd", "adam"] = "adam"  # local (outer) optimizer; unused by reptile
    lr: float = Field(1e-3, gt=0)  # by round as `lr_schedule` says (see Scheduled)
    # gradient-based inner loop (maml, fomaml, metasgd, anil, reptile, perfedavg-*)
    inner_lr: float = Field(0.4, gt=0)  # metasgd: the initial per-parameter rates
    inner_steps: int = Field(1, ge=1, le=1000)  # perfedavg trains with one step whatever this says
    # reptile: its inner loop's optimizer, of rate inner_lr, in training and at meta-test
    # ("adam": Adam with beta1 = 0, Nichol et al. 2018's choice)
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    # meta-test steps; None = 2 * inner_steps
    eval_inner_steps: int | None = Field(None, ge=1, le=1000)
    # the params the inner loop adapts, by name prefix; [] = all (MeLU: ["mlp.", "head."])
    inner_params: list[str] = Field([], max_length=64)
    # fedavg, fedavg-ft and the personalized-FL baselines (fedprox ... local)
    batch_size: int = Field(32, ge=1, le=10**5)  # examples per local step
    # fedprox: the proximal term's weight, mu / 2 * ||w - w_global||^2 on the local loss;
    # ditto: its lambda, the personal model's pull to the global one
    proximal_mu: float = Field(0.01, ge=0)
    head_steps: int = Field(10, ge=1, le=10**4)  # fedrep: steps on the head before the body's
    # fedper, fedrep: the ridge personal_l2 / 2 * ||personal params||^2 on a client's loss
    # and a new user's fit (model mf: the user vector and bias; Ammad-ud-din et al.'s lambda)
    personal_l2: float = Field(0.0, ge=0)
    # fedavg-ft meta-test: SGD steps on the support set
    finetune_steps: int = Field(50, ge=1, le=10**5)
    finetune_lr: float = Field(0.01, gt=0)
    # pfedhn: the clients' embeddings, the hypernetwork's hidden units, and a new client's
    # SGD steps (0: the training clients' mean embedding) and rate on its embedding
    embedding_dim: int = Field(32, ge=1, le=4096)
    hypernet_hidden: int = Field(100, ge=1, le=4096)
    embedding_steps: int = Field(10, ge=0, le=10**4)
    embedding_lr: float = Field(0.1, gt=0)


class ServerConfig(Scheduled):
    rounds: int = Field(10, ge=1, le=10**7)
    clients_per_round: int = Field(5, ge=1, le=10**7)
    sampling: Literal["uniform", "poisson"] = "uniform"
    optimizer: Literal["sgd", "adam", "yogi"] = "sgd"
    lr: float = Field(1.0, gt=0)  # by server step (a round that updates), see Scheduled
    min_clients: int = Field(1, ge=1, le=10**7)  # a round with fewer reports leaves the model unchanged


class EvalConfig(Section):
    # rounds between evaluations; 0 = only after the last round
    every: int = Field(10, ge=0, le=10**7)
    episodes: int = Field(100, ge=1, le=10**5)  # during training
    final_episodes: int = Field(600, ge=1, le=10**5)  # after the last round
    # per held-out client, on its own split; 0 = off
    personalization_episodes: int = Field(0, ge=0, le=10**4)
    # stop after this many evaluations without improvement; 0 = never
    patience: int = Field(0, ge=0, le=10**7)
    ways: int = Field(5, ge=2, le=1000)
    shots: int = Field(1, ge=1, le=1000)  # movielens: a new user's support, its first ratings
    queries: int = Field(15, ge=1, le=1000)
    # also score N-way episodes drawn from the held-out clients pooled into one, each client's
    # classes kept apart: the centralized benchmarks' protocol (Omniglot's evaluation
    # alphabets pooled, Vinyals et al. 2016), beside the federated one (episodes of one client)
    pooled: bool = False


class RunConfig(Section):
    out_dir: str = Field("runs", min_length=1)
    checkpoint_every: int = Field(10, ge=0, le=10**7)  # 0 = only the final checkpoint
    time_budget_seconds: float = Field(0, ge=0)  # stop training after this long; 0 = no limit
    execution: Literal["auto", "loop", "vmap"] = "auto"  # cohort execution (engine/cohort.py)
    chunk_size: int = Field(64, ge=1, le=10**5)  # clients vmapped at once (bounds memory)
    # where params, states, batches and evaluation compute (fedmeta.device): "auto" = CUDA
    # when available, else the CPU
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    # the clients' local steps in float32, or under bfloat16 autocast (fedmeta.device)
    precision: Literal["fp32", "bf16"] = "fp32"
    tensorboard: bool = False  # each round's metrics as scalars in RUN_DIR/tensorboard


class PrivacyConfig(Section):
    """User-level DP (DP-FedAvg): clip each client's update to `clip_norm`, noise of std
    `noise_multiplier * clip_norm` on the sum; 0 = off. Clipping alone is allowed."""

    noise_multiplier: float = Field(0.0, ge=0)
    clip_norm: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    target_epsilon: float = Field(0.0, ge=0)  # stop before the run would spend more; 0 = no budget
    accountant: Literal["rdp", "pld"] = "rdp"
    # adaptive clipping (Andrew et al. 2021): clip_norm is then the initial norm
    adaptive_clipping: bool = False
    clip_quantile: float = Field(0.5, gt=0, lt=1)  # the quantile of update norms to track
    clip_learning_rate: float = Field(0.2, gt=0)
    clip_count_noise: float | None = Field(None, gt=0)  # default: expected cohort / 20
    # sample-level DP-SGD inside each client (fedavg, fedavg-ft): per-example clip and noise
    sample_clip_norm: float | None = Field(None, gt=0)
    sample_noise_multiplier: float = Field(0.0, ge=0)
    canaries: int = Field(0, ge=0, le=10**4)  # canary clients for the empirical audit; 0 = no audit
    canary_norm: float | None = Field(None, gt=0)  # their update's norm; default clip_norm or 1

    @model_validator(mode="after")
    def _complete(self) -> "PrivacyConfig":
        """Each mechanism with the setting it cannot do without."""
        if self.noise_multiplier and self.clip_norm is None:
            raise ValueError("privacy.noise_multiplier needs privacy.clip_norm (the sensitivity)")
        if self.adaptive_clipping and self.clip_norm is None:
            raise ValueError("privacy.adaptive_clipping needs privacy.clip_norm (the initial norm)")
        if self.sample_noise_multiplier and self.sample_clip_norm is None:
            raise ValueError("privacy.sample_noise_multiplier needs privacy.sample_clip_norm")
        if self.target_epsilon and not self.noise_multiplier:
            raise ValueError("privacy.target_epsilon needs privacy.noise_multiplier > 0")
        return self


class AggregationConfig(Section):
    """How the server learns the clients' aggregate. "secagg+": Flower's SecAgg+ (Bell et
    al. 2020) on a deployment, its fixed-point arithmetic in simulation; "ckks": each client
    encrypts its weighted update under CKKS (TenSEAL), the server adds ciphertexts, a key
    holder decrypts only the sum."""

    secure: Literal["none", "secagg+", "ckks"] = "none"
    # SecAgg+ fixed point: values clipped to [-range, range], 2^22 levels, weights n/max_weight
    # (max_weight is 1 under DP noise, whose coefficients are all 1: `build.secagg_max_weight`)
    secagg_clipping_range: float = Field(8.0, gt=0)
    secagg_quantization_range: int = Field(2 ** 22, ge=2, le=2 ** 32)
    secagg_modulus_range: int = Field(2 ** 32, ge=4, le=2 ** 62)
    secagg_max_weight: float = Field(1000.0, gt=0)
    secagg_num_shares: int = Field(3, ge=2, le=10**4)
    secagg_reconstruction_threshold: int = Field(2, ge=2, le=10**4)
    # CKKS: ring degree and the bits of the coefficient modulus chain; scale 2^ckks_scale_bits
    ckks_poly_modulus_degree: Literal[8192, 16384] = 8192
    ckks_scale_bits: int = Field(50, ge=20, le=58)
    # the aggregator: the (sample-weighted) mean or a Byzantine-robust rule (server/robust.py)
    rule: Literal["mean", "median", "trimmed-mean", "krum", "multi-krum"] = "mean"
    byzantine_fraction: float = Field(0.2, ge=0, lt=0.5)  # trimmed per side; Krum's f / cohort
    norm_bound: float | None = Field(None, gt=0)  # clip each client's update to this L2 norm
    # what a client sends (server/compression.py): its update as it is, stochastically
    # quantized to 8 bits a value, or its top-k values with error feedback
    compression: Literal["none", "quantize-8bit", "topk"] = "none"
    topk_fraction: float = Field(0.01, gt=0, le=1)  # of each tensor's values, for "topk"


class AttackConfig(Section):
    """Simulated malicious clients: a `fraction` of the training clients, fixed by the seed.
    "sign-flip" sends -boost x its update; "scaling" trains on flipped labels and sends
    boost x that update (model replacement); "gaussian" sends N(0, noise_std^2) noise;
    "label-flip" trains on flipped labels. `boost` defaults to server.clients_per_round."""

    kind: Literal["none", "sign-flip", "scaling", "gaussian", "label-flip"] = "none"
    fraction: float = Field(0.0, ge=0, lt=1)
    boost: float | None = Field(None, gt=0)
    noise_std: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _together(self) -> "AttackConfig":
        if (self.kind == "none") != (self.fraction == 0):
            raise ValueError("attack.kind and attack.fraction go together: a kind other than "
                             "'none' with a fraction above 0")
        return self


class FaultsConfig(Section):
    """Simulated unreliable clients: each sampled client drops out of a round with
    probability `dropout`; with a `deadline` (in units of the median client's round time), a
    client whose simulated round time exceeds it is a straggler the round does not wait for.
    A client's round time is log-normal: a fixed slowness of its own times a per-round jitter,
    together of log-std `straggler_spread`."""

    dropout: float = Field(0.0, ge=0, lt=1)
    deadline: float = Field(0.0, ge=0)  # 0 = no deadline
    straggler_spread: float = Field(0.5, ge=0)


class FlowerConfig(Section):
    """A run on Flower: how long the server waits for a round's replies (it needs
    server.min_clients of them; a vertical run, every party's reply to each message)."""

    round_timeout: float = Field(600.0, gt=0)  # seconds
    eval_episodes_per_client: int = Field(20, ge=1, le=10**5)  # federated evaluation on each node
    # no-op messages to the training nodes before round 1, timed (run directory's
    # flower_floor.json): the deployment's own floor, to compare round times with
    floor_probes: int = Field(0, ge=0, le=100)


NoiseKind = Literal["none", "gaussian", "laplace"]


class VerticalConfig(Section):
    """A vertical run (`federation = "vertical"`, fedmeta.vertical): parties hold different
    columns of partly the same people, aligned by PSI; a split network trained on the aligned
    rows, scored on held-out aligned rows against the label party alone and all columns
    centralized, over `repeats` seeds. What crosses the cut may be clipped and noised
    (vertical/protection.py: the scale is multiplier x clip, per row)."""

    # "breast-cancer": scikit-learn's, its 30 columns split over `parties` departments, each
    # holding a random `holding` fraction of the patients; "files": one CSV per party
    # (`party_files`, the label party's first; on Flower each party's node config names its
    # own, and party_files stays empty): a header `id,<columns>`, the label party's
    # with a `label` column of class numbers 0..C-1; "omniglot-strips": few-shot, the bundled
    # Omniglot's characters cut into `parties` vertical strips (vertical ProtoNets);
    # "femnist-strips": FEMNIST's characters so cut, training writers' against new writers'
    data: Literal["breast-cancer", "files", "omniglot-strips", "femnist-strips"] = (
        "breast-cancer")
    path: str | None = None  # femnist-strips' file (None: $FEDMETA_DATA, then the cache)
    party_files: list[str] = Field([], max_length=64)
    parties: int = Field(3, ge=2, le=28)
    holding: float = Field(0.8, gt=0, le=1)
    test_fraction: float = Field(0.3, gt=0, lt=1)  # of the aligned rows, held out for scoring
    hidden: int = Field(16, ge=1, le=4096)  # each bottom MLP: columns -> hidden -> embedding
    embedding: int = Field(4, ge=1, le=4096)  # cut-layer width of each party
    top_hidden: int = Field(16, ge=1, le=4096)
    epochs: int = Field(30, ge=1, le=10**5)
    batch_size: int = Field(32, ge=1, le=10**6)
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(0.01, gt=0)
    # omniglot-strips: meta-training episodes (one a step) of the background alphabets, and
    # meta-test episodes of the evaluation alphabets' characters, the same for every setting
    # (femnist-strips: of the training writers', and of 20% of the writers held out)
    ways: int = Field(5, ge=2, le=1000)
    shots: int = Field(1, ge=1, le=1000)
    queries: int = Field(5, ge=1, le=1000)
    test_queries: int = Field(15, ge=1, le=1000)
    steps: int = Field(2000, ge=1, le=10**7)
    test_episodes: int = Field(300, ge=1, le=10**5)
    repeats: int = Field(5, ge=1, le=1000)  # seeds seed, seed + 1, ...: the CIs' sample
    embedding_noise: NoiseKind = "none"  # on what the other parties send up
    embedding_clip: float | None = Field(None, gt=0)
    embedding_noise_multiplier: float = Field(0.0, ge=0)
    gradient_noise: NoiseKind = "none"  # on what the label party sends back down
    gradient_clip: float | None = Field(None, gt=0)
    gradient_noise_multiplier: float = Field(0.0, ge=0)
    delta: float = Field(1e-5, gt=0, lt=1)  # of the per-row epsilon reported

    @model_validator(mode="after")
    def _complete(self) -> "VerticalConfig":
        if self.party_files and self.data != "files":
            raise ValueError("vertical.party_files go with vertical.data = 'files', and only "
                             "with it")
        if self.path is not None and self.data != "femnist-strips":
            raise ValueError("vertical.path goes with vertical.data = 'femnist-strips' only")
        for side in ("embedding", "gradient"):
            noise = getattr(self, f"{side}_noise")
            if noise != "none" and (getattr(self, f"{side}_clip") is None
                                    or not getattr(self, f"{side}_noise_multiplier")):
                raise ValueError(f"vertical.{side}_noise = {noise!r} needs vertical.{side}_clip "
                                 f"and vertical.{side}_noise_multiplier > 0 (its scale)")
        return self


MODELS_FOR = {"shakespeare": ("char-lstm",), "movielens": ("melu", "mf")}  # else IMAGE_MODELS
IMAGE_MODELS = ("conv4", "cnn", "mlp")
GLOBAL_LABELS = ("femnist", "synthetic", "fashion-mnist", "shakespeare")


class Config(Section):
    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0, le=2**63 - 1)  # a signed 64-bit integer, as torch takes
    # horizontal: clients hold different people (every section below but `vertical`);
    # vertical: parties hold different columns of the same people (`vertical`, `run`, `flower`)
    federation: Literal["horizontal", "vertical"] = "horizontal"
    data: DataConfig = DataConfig()
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    learner: LearnerConfig = LearnerConfig()
    server: ServerConfig = ServerConfig()
    eval: EvalConfig = EvalConfig()
    run: RunConfig = RunConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    aggregation: AggregationConfig = AggregationConfig()
    attack: AttackConfig = AttackConfig()
    faults: FaultsConfig = FaultsConfig()
    flower: FlowerConfig = FlowerConfig()
    vertical: VerticalConfig = VerticalConfig()

    @property
    def unread_sections(self) -> set[str]:
        """The sections this federation does not read: a vertical run reads `vertical`, `run`
        and `flower` only, a horizontal run every other but `vertical`."""
        vertical = self.federation == "vertical"
        return {name for name, field in type(self).model_fields.items()
                if isinstance(field.default, Section) and name not in ("run", "flower")
                and (name == "vertical") != vertical}

    @model_validator(mode="after")
    def _one_federation(self) -> "Config":
        """No unread section set to anything but its defaults."""
        unread = sorted(name for name in self.unread_sections
                        if getattr(self, name) != type(self).model_fields[name].default)
        if unread:
            vertical = self.federation == "vertical"
            raise ValueError(f"federation = {self.federation!r} does not read "
                             f"[{unread[0]}]: remove it, or set federation = "
                             f"{'horizontal' if vertical else 'vertical'!r}")
        return self

    @model_validator(mode="after")
    def _global_labels(self) -> "Config":
        """Tasks with the dataset's labels only where held-out clients have the training
        clients' classes."""
        if self.task.labels == "global" and self.data.dataset not in GLOBAL_LABELS:
            raise ValueError(f"task.labels = 'global' needs held-out clients with the training "
                             f"clients' classes ({', '.join(GLOBAL_LABELS)}); "
                             f"{self.data.dataset}'s are new classes or ratings")
        return self

    @model_validator(mode="after")
    def _model_for_data(self) -> "Config":
        """Text clients take the character model, ratings a rating model, images and features
        conv4, cnn or mlp."""
        models = MODELS_FOR.get(self.data.dataset, IMAGE_MODELS)
        if self.model.name not in models:
            raise ValueError(f"data.dataset = {self.data.dataset!r} needs model.name = "
                             f"{' or '.join(models)!r}, got {self.model.name!r}")
        return self

    @model_validator(mode="after")
    def _accounted_cohorts(self) -> "Config":
        """The privacy accountant can account for the cohorts the server samples."""
        if (self.privacy.noise_multiplier and self.server.sampling == "uniform"
                and self.privacy.accountant == "pld"):
            raise ValueError("fixed-size cohorts (server.sampling = 'uniform') are accounted "
                             "by RDP: set privacy.accountant = 'rdp' or sampling 'poisson'")
        return self

    @model_validator(mode="after")
    def _secure_aggregation_hides_each_update(self) -> "Config":
        """What secure aggregation rules out: everything that reads a single client's update
        on the server, or encodes it another way."""
        agg, privacy = self.aggregation, self.privacy
        secure = agg.secure
        if secure == "none":
            return self
        if privacy.adaptive_clipping:
            raise ValueError(f"aggregation.secure = {secure!r} hides the per-client norms "
                             "adaptive clipping needs: set privacy.adaptive_clipping = false")
        if privacy.canaries:
            raise ValueError(f"aggregation.secure = {secure!r}: the canary audit needs the "
                             "plain aggregate path (privacy.canaries = 0)")
        if agg.compression != "none":
            raise ValueError(f"aggregation.secure = {secure!r} encodes the updates its own way; "
                             f"aggregation.compression = {agg.compression!r} is for plain "
                             "updates")
        if agg.rule != "mean":
            raise ValueError(f"aggregation.rule = {agg.rule!r} needs each client's update, "
                             f"which aggregation.secure = {secure!r} hides")
        return self

    @model_validator(mode="after")
    def _noise_calibrated_to_the_mean(self) -> "Config":
        """User-level DP's noise is scaled to the mean's sensitivity."""
        if self.aggregation.rule != "mean" and self.privacy.noise_multiplier:
            raise ValueError(f"user-level DP noise is calibrated to the mean; aggregation.rule "
                             f"= {self.aggregation.rule!r} has another sensitivity")
        return self


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"config error: unknown key {reprlib.repr(key)}"
    message = first["msg"].removeprefix("Value error, ")
    if not key or first["type"] == "value_error":  # a validator's message names its keys
        return f"config error: {message}"
    return f"config error: {key}: {message} (got {reprlib.repr(first.get('input'))})"


OVERRIDE = re.compile(r"""(?:[^\s'"]|'[^']*'|"(?:[^"\\]|\\.)*")+""")


def split_overrides(text: str) -> list[str]:
    """`KEY=VALUE` overrides separated by spaces, as one string: a value with spaces quoted
    as TOML quotes it (`data.path='/my data'`). UserError on an unclosed quote."""
    overrides, end = [], 0
    for match in OVERRIDE.finditer(text):
        if text[end:match.start()].strip():
            break
        overrides.append(match.group())
        end = match.end()
    if text[end:].strip():
        raise UserError(f"config error: an unclosed quote in {text!r}")
    return overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value), the value read as TOML (bare words as strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"config error: --set expects KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):  # not TOML (or nested too deep): a word
        value = raw.strip()
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"config error: --set {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def validate(data: dict[str, Any]) -> Config:
    """The config of `data`, checked; where it is run from (not on Flower's nodes, which
    never log to TensorBoard), the packages it needs are installed."""
    try:
        config = Config.model_validate(data)
    except ValidationError as error:
        raise UserError(_describe(error)) from None
    if config.run.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("config error: run.tensorboard needs the tensorboard package: "
                        "pip install tensorboard")
    return config


def with_overrides(data: dict[str, Any], overrides: list[str]) -> Config:
    """The config of `data` with `KEY=VALUE` overrides applied, checked as a file's would be."""
    return validate(apply_overrides(data, list(overrides)))


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (or the defaults when `path` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"config error: no such file {path}") from None
        except OSError as error:
            raise UserError(f"config error: cannot read {path}: {error.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"config error: {path} is not valid TOML: {error}") from None
        except RecursionError:
            raise UserError(f"config error: {path} is not valid TOML: nested too deep") from None
    return with_overrides(data, overrides)
