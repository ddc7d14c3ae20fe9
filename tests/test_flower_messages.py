"""The fedmeta config of a Flower run: the app's table, with any other key through `set`."""

import pytest

from fedmeta.errors import UserError
from fedmeta.flower.messages import config_from_run_config


def test_set_takes_keys_the_table_does_not_list_a_value_with_spaces_quoted():
    config = config_from_run_config({"server.rounds": 3, "set": (
        "privacy.clip_norm=0.5 data.path='/my data/omniglot.npz' data.num_clients=7")})
    assert (config.server.rounds, config.privacy.clip_norm) == (3, 0.5)
    assert (config.data.path, config.data.num_clients) == ("/my data/omniglot.npz", 7)


@pytest.mark.parametrize("value, message", [("name='unclosed", "an unclosed quote"),
                                            ("learner.bogus=1", "unknown key")])
def test_a_bad_set_is_one_line(value, message):
    with pytest.raises(UserError, match=message):
        config_from_run_config({"set": value})
