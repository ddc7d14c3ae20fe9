"""Bytes communicated in a round, counted as a deployment's wire format would carry them: a
pure function of the config, the params' shapes and dtypes, and how many clients took part.

- `bytes_down`: the global params, raw in their dtype, once for every sampled client: the
  server sends the model to the whole cohort as the round starts, before any client drops out,
  misses the deadline or finds too little data to train.
- `bytes_up`: the update of every client that reports one the aggregator takes, as encoded:
  raw values in the params' dtype, or `aggregation.compression`'s encoding
  (`fedmeta.server.compression.encoded_bytes`), or under `aggregation.secure` its CKKS
  ciphertexts (the update flattened into ciphertexts of poly_modulus_degree / 2 values,
  `fedmeta.privacy.encryption.ciphertext_bytes` each) or SecAgg+'s masked vector (the
  quantized weight and every value, `SECAGG_ELEMENT_BYTES` each).

Not counted: message framing (Flower's records, protobuf, gRPC, TLS), tensor names and shapes,
a client's weight and loss (two numbers), the canary audit's simulated clients, updates the
server receives but discards as non-finite, SecAgg+'s key agreement and secret shares (a few
hundred bytes per neighbour, whatever the model's size) and CKKS's once-a-round decryption (the
encrypted sum to one key holder, its float64 plaintext back: about 1/C of the upload).
"""

import math

from fedmeta.config import Config
from fedmeta.params import Params
from fedmeta.privacy.encryption import ciphertext_bytes
from fedmeta.privacy.secure_aggregation import SECAGG_ELEMENT_BYTES
from fedmeta.server.compression import encoded_bytes


def params_bytes(params: Params) -> int:
    """The params raw: every value in its dtype."""
    return sum(v.numel() * v.element_size() for v in params.values())


def update_bytes(config: Config, params: Params) -> int:
    """One client's update as the configured aggregation encodes it, for a model of `params`."""
    agg = config.aggregation
    size = sum(v.numel() for v in params.values())
    if agg.secure == "ckks":
        slots = agg.ckks_poly_modulus_degree // 2
        return math.ceil(size / slots) * ciphertext_bytes(agg.ckks_poly_modulus_degree,
                                                          agg.ckks_scale_bits)
    if agg.secure == "secagg+":
        return (size + 1) * SECAGG_ELEMENT_BYTES
    return sum(encoded_bytes(agg.compression, v, agg.topk_fraction) for v in params.values())


def round_bytes(config: Config, params: Params, sent: int, reported: int) -> dict[str, int]:
    """A round's `bytes_down` (the params to `sent` clients) and `bytes_up` (the updates of
    `reported` clients)."""
    return {"bytes_down": sent * params_bytes(params),
            "bytes_up": reported * update_bytes(config, params)}
