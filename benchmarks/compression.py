"""Accuracy vs bytes communicated (issue 8): updates sent as they are, stochastically quantized
to 8 bits, or sparsified to their top 1% and 10% with error feedback.

The workload is `benchmarks/robustness.py`'s without attack, aggregated by the mean: federated
ProtoNets on Omniglot (300 clients of random character groups, rotations as classes), 30 rounds
of a cohort of 10; meta-test on clients of the evaluation alphabets never seen in training.
Bytes are the runs' own `bytes_up`/`bytes_down` metrics summed over the rounds. Each run
appends a JSON line to `--out`; `--table` prints the markdown table of a results file.

    python benchmarks/compression.py --data ../shared/data --jobs 2 --out results.jsonl
    python benchmarks/compression.py --table results.jsonl
"""

from parallel import run_sweep, sweep_parser  # beside this script
from robustness import AGGREGATORS, simulate  # the workload, from the script beside this one

COMPRESSIONS = {
    "none": ["aggregation.compression='none'"],
    "8-bit quantization": ["aggregation.compression='quantize-8bit'"],
    "top-10% + error feedback": ["aggregation.compression='topk'", "aggregation.topk_fraction=0.1"],
    "top-1% + error feedback": ["aggregation.compression='topk'", "aggregation.topk_fraction=0.01"],
}


def run_one(job: tuple[str, int, str, int, int]) -> dict:
    compression, seed, data, rounds, episodes = job
    totals = {"bytes_up": 0, "bytes_down": 0}

    def count(round_index, params, state, metrics):
        for key in totals:
            totals[key] += metrics[key]

    result = simulate(AGGREGATORS["mean"] + COMPRESSIONS[compression] + [f"seed={seed}"],
                      data, rounds, episodes, [count])
    return {"compression": compression, "seed": seed, "rounds": rounds, **totals, **result}


def table(rows: list[dict]) -> str:
    """A row per compression and seed: accuracy % +- 95% CI, MB sent each way over the run,
    and the upload against the uncompressed run of the same seed."""
    plain = {r["seed"]: r["bytes_up"] for r in rows if r["compression"] == "none"}
    lines = ["| compression | seed | accuracy % | MB up | up vs none | MB down |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (list(COMPRESSIONS).index(r["compression"]), r["seed"])):
        ratio = f"{r['bytes_up'] / plain[r['seed']]:.2%}" if r["seed"] in plain else ""
        lines.append(f"| {r['compression']} | {r['seed']} | {100 * r['test_accuracy']:.1f} ± "
                     f"{100 * r['test_ci95']:.1f} | {r['bytes_up'] / 1e6:.2f} | {ratio} | "
                     f"{r['bytes_down'] / 1e6:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = sweep_parser(__doc__)
    parser.add_argument("--compressions", nargs="+", default=list(COMPRESSIONS),
                        choices=COMPRESSIONS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    run_sweep(parser, run_one, lambda args: [(compression, seed, args.data, args.rounds,
                                              args.episodes)
                                             for seed in args.seeds
                                             for compression in args.compressions], table)


if __name__ == "__main__":
    main()
