#!/usr/bin/env bash
# Converged runs that a CPU session cannot afford, for a session lent a GPU (issue 16):
# FedMeta-MAML 5-way 1-shot on Omniglot, its cosine schedule sized to MAML_SECONDS (default
# 180) of training on the GPU (`converged.py --fit-seconds`), the best meta-validation round
# kept and meta-tested once on the 20 evaluation alphabets, within one alphabet and pooled.
# About 3 minutes of install, then MAML_SECONDS plus evaluations (every 200 rounds; at most
# 6 minutes in all, `--max-hours 0.1`). The data does not travel by itself: copy it into the
# ignored .gpudata/ and carry that folder:
#
#     mkdir -p .gpudata && cp ../shared/data/omniglot.npz .gpudata/
#     device tool: run "bash benchmarks/gpu_converged.sh", carry [".gpudata"], timeout_s 560
#
# ALGORITHMS="metasgd" runs another of converged.py's algorithms instead (Meta-SGD led the
# seven-minute CPU rows); each takes MAML_SECONDS plus its evaluations.
# Paste the table into BENCHMARKS.md, issue 16's converged MAML section, with the device.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .gpudata/omniglot.npz ] || { echo ".gpudata/omniglot.npz is missing (see the header)"; exit 2; }
source benchmarks/gpu_install.sh  # step, $out (absolute), $py

step "${ALGORITHMS:-maml} 5w1s, a cosine over about ${MAML_SECONDS:-180} s of training"
recipe=("learner.lr_schedule='cosine'")  # each algorithm at its swept inner rate (accuracy.py)
cd benchmarks && timeout 420 "$py" converged.py --data ../.gpudata --runs "$out/converged" \
    --settings omniglot-5w1s --algorithms ${ALGORITHMS:-maml} --threads 4 --every 200 --patience 100 \
    --max-hours 0.1 --episodes 600 --fit-seconds "${MAML_SECONDS:-180}" \
    --out "$out/converged-5w1s-gpu.jsonl" --set "${recipe[@]}"
