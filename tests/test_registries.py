"""The names a config accepts are exactly those the registries hold: a name added to one and
not the other is a config that validates and then fails, or code no config can reach."""

from typing import get_args

import pytest

from fedmeta.build import LEARNERS
from fedmeta.config import AggregationConfig, LearnerConfig, ServerConfig
from fedmeta.optim import OPTIMIZERS
from fedmeta.server.robust import ROBUST_RULES


def names(section, key) -> set[str]:
    return set(get_args(section.model_fields[key].annotation))


@pytest.mark.parametrize("accepted, registered", [
    (names(LearnerConfig, "algorithm"), set(LEARNERS)),
    (names(ServerConfig, "optimizer"), set(OPTIMIZERS)),
    (names(LearnerConfig, "optimizer"), set(OPTIMIZERS) - {"yogi"}),  # FedYogi: a server's
    (names(AggregationConfig, "rule"), set(ROBUST_RULES) | {"mean"}),
])
def test_config_names_equal_the_registries_keys(accepted, registered):
    assert accepted == registered
