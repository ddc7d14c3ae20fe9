"""Cost of secure aggregation per client, against the plain weighted sum in the same run:
CKKS (TenSEAL) encryption, ciphertext bytes, the server's ciphertext additions and the key
holder's decryption, and the SecAgg+ fixed-point arithmetic a simulation runs, for the
update of the Conv-4 model (Omniglot) and the accuracy of the aggregate.

    python benchmarks/secure_aggregation.py [--clients 10] [--repeats 3]
"""

import argparse
import json
import time

import torch

from fedmeta.models import build_model
from fedmeta.privacy.encryption import CkksKeys, add_encrypted, decrypt, encrypt, load_context
from fedmeta.privacy.secure_aggregation import secagg_sum
from fedmeta.server.aggregate import plain_sum


def seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timings of `fn()`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model("conv4", (1, 28, 28), 5, 64)
    size = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    deltas = {"update": 1e-3 * torch.randn(args.clients, size, generator=g, dtype=torch.float64)}
    weights = torch.randint(20, 1000, (args.clients,), generator=g).double()
    plain, total = plain_sum(deltas, weights, 0)
    exact = plain["update"] / total

    keys = CkksKeys.generate()
    secret, public = load_context(keys.secret), load_context(keys.public)
    rows = deltas["update"] * weights[:, None]
    encrypted = [encrypt(secret, row, keys.slots) for row in rows]
    summed = add_encrypted(public, encrypted)
    ckks_error = float((decrypt(secret, summed) / total - exact).norm() / exact.norm())
    secagg = secagg_sum(8.0, 2 ** 22, 2 ** 32, 1000.0, seed=0)
    secagg_total, secagg_weight = secagg(deltas, weights, 0)
    secagg_error = float((secagg_total["update"] / secagg_weight - exact).norm() / exact.norm())

    plain_s = seconds(lambda: plain_sum(deltas, weights, 0), args.repeats) / args.clients
    result = {
        "params": size, "clients": args.clients, "float32_bytes": 4 * size,
        "ckks_bytes_per_client": sum(len(part) for part in encrypted[0]),
        "ckks_encrypt_s_per_client": seconds(lambda: encrypt(secret, rows[0], keys.slots),
                                             args.repeats),
        "ckks_server_add_s_per_client": seconds(lambda: add_encrypted(public, encrypted),
                                                args.repeats) / args.clients,
        "ckks_decrypt_s": seconds(lambda: decrypt(secret, summed), args.repeats),
        "plain_sum_s_per_client": plain_s,
        "secagg_fixed_point_s_per_client": seconds(lambda: secagg(deltas, weights, 0),
                                                   args.repeats) / args.clients,
        "ckks_relative_error": ckks_error, "secagg_relative_error": secagg_error,
    }
    result["ckks_bytes_over_float32"] = result["ckks_bytes_per_client"] / result["float32_bytes"]
    result["ckks_encrypt_over_plain_sum"] = result["ckks_encrypt_s_per_client"] / plain_s
    result["secagg_over_plain_sum"] = result["secagg_fixed_point_s_per_client"] / plain_s
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
