import pytest
from hypothesis import given, strategies as st

from fedmeta.config import load_config, parse_override
from fedmeta.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides():
    config = load_config(None, ["server.rounds=3", "learner.lr=0.5", "name=abc",
                                "data.path=bundled"])
    assert (config.server.rounds, config.learner.lr, config.name) == (3, 0.5, "abc")
    assert config.data.path == "bundled"


@pytest.mark.parametrize("text, message", [
    ("[learner]\nfoo = 1\n", "unknown key 'learner.foo'"),
    ("[server]\nrounds = 'ten'\n", "server.rounds: Input should be a valid integer"),
    ("[server]\nrounds = 0\n", "server.rounds: Input should be greater than or equal to 1"),
    ("[learner]\nlr = -1.0\n", "learner.lr: Input should be greater than 0"),
    ("[data]\npartition = 'random'\n", "data.num_clients is required"),
    ("[server\n", "is not valid TOML"),
    ("[data]\ndataset = 'femnist'\npath = 'bundled'\n", "is the bundled Omniglot"),
    ("[data]\ndataset = 'fashion-mnist'\nbalanced = false\n",
     "data.balanced = false sets the amounts of data.partition = 'pathological'"),
    ("bogus = 1\n", "unknown key 'bogus'"),
])
def test_bad_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(UserError) as error:
        load_config(write(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="KEY=VALUE"):
        load_config(None, ["server.rounds"])
    with pytest.raises(UserError, match="not a section"):
        load_config(write(tmp_path, 'name = "a"\n'), ["name.x=1"])


@given(st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True),
       st.one_of(st.integers(-10**6, 10**6), st.booleans(),
                 st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_override_values_parse_as_toml(key, value):
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    path, parsed = parse_override(f"{key}={text}")
    assert path == key.split(".")
    assert parsed == value and type(parsed) is type(value)
