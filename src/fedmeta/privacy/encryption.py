"""Encrypted aggregation with CKKS homomorphic encryption (Cheon, Kim, Kim, Song 2017,
"Homomorphic Encryption for Arithmetic of Approximate Numbers"), through TenSEAL.

The clients share a secret-key context; the server holds its public part, which can add
ciphertexts but not decrypt them. Each client encrypts its weighted update, the server adds
the ciphertexts, and a key holder decrypts only the sum (an honest-but-curious server learns
the aggregate, as with secure aggregation, and nothing of a single client's update). CKKS is
approximate: the sum comes back with relative error around 2^-scale_bits per value.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import tenseal as ts
import torch

from fedmeta.params import Params, flatten_rows, unflatten
from fedmeta.server.aggregate import Summation


def modulus_chain(scale_bits: int) -> list[int]:
    """Bits of the coefficient moduli. Sums need no multiplicative depth: one level of
    `scale_bits` after a 60-bit prime, then the special prime of key switching."""
    return [60, scale_bits, 60]


def ciphertext_bytes(poly_modulus_degree: int, scale_bits: int) -> int:
    """A fresh ciphertext's size as SEAL holds it: two polynomials of `poly_modulus_degree`
    coefficients, a 64-bit word per prime of the chain but the special one. TenSEAL's
    serialization compresses it a little (measured 4-12% smaller)."""
    return 2 * poly_modulus_degree * (len(modulus_chain(scale_bits)) - 1) * 8


@dataclass(frozen=True)
class CkksKeys:
    """A CKKS context with its secret key (`secret`, the clients') and without it (`public`,
    the server's), as bytes that travel to each party."""

    secret: bytes
    public: bytes
    slots: int  # values per ciphertext: poly_modulus_degree / 2

    @classmethod
    def generate(cls, poly_modulus_degree: int = 8192, scale_bits: int = 50) -> "CkksKeys":
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly_modulus_degree,
                             coeff_mod_bit_sizes=modulus_chain(scale_bits))
        context.global_scale = 2 ** scale_bits
        return cls(context.serialize(save_secret_key=True),
                   context.serialize(save_secret_key=False, save_relin_keys=False), poly_modulus_degree // 2)


def load_context(data: bytes) -> ts.Context:
    return ts.context_from(data)


Encrypted = list[bytes]  # a vector as serialized ciphertexts of at most one slot count each


def encrypt(context: ts.Context, vector: torch.Tensor, slots: int) -> Encrypted:
    """A flat float vector encrypted, a ciphertext per `slots` values (at most
    `poly_modulus_degree / 2`)."""
    values = vector.double().cpu().numpy()
    return [ts.ckks_vector(context, values[i:i + slots]).serialize()
            for i in range(0, len(values), slots)]


def add_encrypted(context: ts.Context, vectors: Iterable[Encrypted]) -> Encrypted:
    """The encrypted sum of encrypted vectors; `context` may be the public one."""
    total = None
    for vector in vectors:
        parts = [ts.ckks_vector_from(context, part) for part in vector]
        if total is not None and len(parts) != len(total):
            raise ValueError(f"encrypted vectors of {len(parts)} and {len(total)} ciphertexts")
        total = parts if total is None else [a + b for a, b in zip(total, parts)]
    if total is None:
        raise ValueError("no encrypted vectors to add")
    return [part.serialize() for part in total]


def decrypt(context: ts.Context, vector: Encrypted) -> torch.Tensor:
    """The plaintext of an encrypted vector; `context` must hold the secret key."""
    return torch.from_numpy(np.concatenate(
        [np.asarray(ts.ckks_vector_from(context, part).decrypt(), dtype=np.float64)
         for part in vector]))


def ckks_sum(keys: CkksKeys) -> Summation:
    """A `Summation` through CKKS: every client encrypts coefficient x its delta under the
    shared key, the server adds ciphertexts with the public context, the key holder decrypts."""
    secret, public = load_context(keys.secret), load_context(keys.public)

    def summation(deltas: Params, coefficients: torch.Tensor,
                  count: int) -> tuple[Params, torch.Tensor]:
        rows = flatten_rows(deltas).double() * coefficients.double()[:, None]
        total = add_encrypted(public, (encrypt(secret, row, keys.slots) for row in rows))
        return unflatten(decrypt(secret, total), deltas), coefficients.sum()

    return summation
