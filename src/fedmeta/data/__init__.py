"""Federated few-shot data: clients, partitioners, episodes and the datasets built on them."""
from fedmeta.data.cold_start import ColdStartSampler, TooFewRatings
from fedmeta.data.episodes import EpisodeSampler, Episodes, NotEnoughData, episodes_from_arrays
from fedmeta.data.federated import (
    ArrayFederatedDataset,
    ClientData,
    FederatedDataset,
    as_float_input,
    split_support_query,
)
from fedmeta.data.femnist import femnist_federated, femnist_writers
from fedmeta.data.movielens import movielens_federated, movielens_users
from fedmeta.data.omniglot import load_omniglot_arrays, omniglot_clients, omniglot_federated
from fedmeta.data.partition import dirichlet_partition, key_partition, random_partition, shard_partition
from fedmeta.data.sources import ChecksumError, DatasetNotFound, resolve_dataset
from fedmeta.data.shakespeare import TextFederatedDataset, shakespeare_federated, shakespeare_roles
from fedmeta.data.synthetic import SyntheticFederatedDataset, synthetic_federated
from fedmeta.data.fashion_mnist import fashion_mnist_federated, load_fashion_mnist
from fedmeta.data.own_tasks import OwnExamplesSampler, TaskSampler
from fedmeta.data.validation import hold_out_validation, own_splits, validation_count

__all__ = [
    "ArrayFederatedDataset",
    "ChecksumError",
    "ClientData",
    "ColdStartSampler",
    "DatasetNotFound",
    "EpisodeSampler",
    "Episodes",
    "FederatedDataset",
    "NotEnoughData",
    "OwnExamplesSampler",
    "SyntheticFederatedDataset",
    "TaskSampler",
    "TextFederatedDataset",
    "TooFewRatings",
    "as_float_input",
    "dirichlet_partition",
    "episodes_from_arrays",
    "fashion_mnist_federated",
    "femnist_federated",
    "femnist_writers",
    "hold_out_validation",
    "key_partition",
    "load_fashion_mnist",
    "load_omniglot_arrays",
    "movielens_federated",
    "movielens_users",
    "omniglot_clients",
    "omniglot_federated",
    "own_splits",
    "random_partition",
    "resolve_dataset",
    "shakespeare_federated",
    "shakespeare_roles",
    "shard_partition",
    "split_support_query",
    "synthetic_federated",
    "validation_count",
]
