"""Secure aggregation's fixed-point arithmetic, as Flower's SecAgg+ computes it (Bell, Bonawitz,
Gascón, Lepoint, Raykova 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead"; Flower's `secaggplus_mod` on the client, `SecAggPlusWorkflow` on the server).

Masks cancel in the sum, so the server learns exactly the modular sum of the clients'
quantized vectors; what secure aggregation costs in accuracy is that quantization. Each client
scales its vector by its quantized weight `round(n / max_weight * T) / T`, clips it to
[-c, c], maps it to [0, T] and rounds stochastically; the server sums modulo M and maps back.
A simulation runs this arithmetic so the effect shows (and overflow, if M or c is too small);
a deployment runs Flower's real protocol (`fedmeta.flower`).
"""

import torch

from fedmeta.server.aggregate import Summation

from fedmeta.seeding import SECAGG_STREAM, seeded, uniform_like
from fedmeta.params import Params, flatten_rows, unflatten

# Flower's `secaggplus_mod` sends the masked vector (the quantized weight, then every value)
# as int64 arrays: 8 bytes an element, where log2(modulus_range) bits would do.
SECAGG_ELEMENT_BYTES = 8


def secagg_sum(clipping_range: float, quantization_range: int, modulus_range: int,
               max_weight: float, seed: int) -> Summation:
    """A `Summation` with SecAgg+'s fixed-point encoding: (weighted sum, total weight) as the
    server reconstructs them, weights quantized as the protocol quantizes them."""
    c, levels, modulus = clipping_range, quantization_range, modulus_range

    def summation(deltas: Params, coefficients: torch.Tensor,
                  count: int) -> tuple[Params, torch.Tensor]:
        rows = flatten_rows(deltas).double()
        q_ratio = torch.round(coefficients.double() / max_weight * levels)
        scaled = rows * (q_ratio / levels)[:, None]
        real = (scaled.clamp(-c, c) + c) * (levels / (2 * c))
        noise = uniform_like(real, seeded(seed, SECAGG_STREAM, count))
        quantized = torch.floor(real).long() + (noise < real - torch.floor(real)).long()
        total = quantized.sum(0) % modulus
        q_total = q_ratio.long().sum() % modulus
        clients = len(coefficients)
        summed = (total.double() * (2 * c / levels) - clients * c) * (levels / q_total.double())
        # the protocol reveals the mean; the total weight is its quantized weights' sum
        weight = q_total.double() / levels * max_weight
        return unflatten(summed * weight, deltas), weight

    return summation
