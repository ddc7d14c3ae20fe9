#!/usr/bin/env bash
# Shakespeare at the scale a CPU session cannot afford, for a session lent a GPU (issue 20):
# LEAF's LSTM 256, ROUNDS (default 300) rounds of 4 roles, new roles adapting on 128 windows
# by 10 steps, FedAvg, FedAvg+FT, FOMAML and second-order MAML (training inner rate 0.5, the
# CPU sweep's choice), one process each on the one GPU; the round kept and the adaptation
# rate chosen on the meta-validation roles, the meta-test roles read once. About 3 minutes of
# install, then at most 6 minutes of runs (a run cut short by the timeout prints nothing).
# The data does not travel by itself: copy it into the ignored .gpudata/ and carry that folder:
#
#     mkdir -p .gpudata && cp ../shared/data/shakespeare.npz .gpudata/
#     device tool: run "bash benchmarks/gpu_shakespeare.sh", carry [".gpudata"], timeout_s 560
#
# Paste the table into BENCHMARKS.md, issue 20's section, with the device.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .gpudata/shakespeare.npz ] \
    || { echo ".gpudata/shakespeare.npz is missing (see the header)"; exit 2; }
source benchmarks/gpu_install.sh  # step, $out (absolute), $py

step "Shakespeare, LSTM 256, ${ROUNDS:-300} rounds, 128-window supports"
(cd benchmarks && timeout 360 "$py" shakespeare.py --data ../.gpudata --hidden 256 \
    --rounds "${ROUNDS:-300}" --every "${EVERY:-25}" --val-episodes 20 --episodes 100 \
    --eval-shots 128 --adapt-steps 10 --adapt-lrs 0.01 0.02 0.05 0.1 0.2 \
    --algorithms fedavg fedavg-ft fomaml maml --jobs 4 --out "$out/shakespeare-gpu.jsonl" \
    > /dev/null)

step "table"
(cd benchmarks && "$py" shakespeare.py --table "$out/shakespeare-gpu.jsonl")
