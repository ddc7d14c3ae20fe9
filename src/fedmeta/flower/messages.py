"""What the ServerApp and the ClientApp say to each other (Flower Message API records).

- `query.describe` -> the node's client id, example count, input shape, label space, item
  space (a rating client's), role and, if it holds a CKKS key, the key's public part;
- `train.update` (params, round, config) -> the client's delta (or, with CKKS, its weighted delta
  encrypted), its weight and mean local loss;
- `query.decrypt` (an encrypted sum) -> its plaintext, from a key holder;
- `evaluate` (params) -> accuracy over episodes (or tasks) of the node's own data, or a
  rating client's MAE, RMSE and NDCG@10 as a new user;
- `query.ping` -> nothing: the round trip of a no-op ClientApp, Flower's own floor;
- `train` (legacy FitIns, under Flower's SecAgg+ workflow) -> the client's delta as FitRes,
  which `secaggplus_mod` masks before it leaves the node.

The fedmeta config travels with every message as JSON, with the label and item spaces the
server's learner has, so both sides build the same learner.
"""

import os

# flwr reads these on import: no telemetry, no update check, no dependency installs at run time
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")

from flwr.common.config import unflatten_dict  # noqa: E402

from fedmeta.config import Config, split_overrides, with_overrides  # noqa: E402

DESCRIBE, DECRYPT, PING = "query.describe", "query.decrypt", "query.ping"
TRAIN, EVALUATE = "train.update", "evaluate"


def config_from_run_config(run_config: dict) -> Config:
    """The fedmeta config of a Flower run: `[tool.flwr.app.config]` holds fedmeta's keys as
    tables (`[tool.flwr.app.config.learner]`), which Flower flattens to dotted keys. Flower
    overrides only the keys the table lists; its `set` key takes any others, as `fedmeta run
    --set` does: space-separated `KEY=VALUE`, a value with spaces quoted as TOML quotes it
    (`set="privacy.clip_norm=0.5 data.path='/my data/omniglot.npz'"`)."""
    settings = dict(run_config)
    overrides = split_overrides(str(settings.pop("set", "")))
    return with_overrides(unflatten_dict(settings), overrides)


def config_message(config: Config, **values: int | float | list[int]) -> dict:
    """The `config` record of a message: the fedmeta config as JSON and `values`."""
    return {"fedmeta": config.model_dump_json(), **values}

