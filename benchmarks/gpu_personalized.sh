#!/usr/bin/env bash
# PFLlib's label-skew benchmark at a budget a CPU session cannot afford, for a session lent a
# GPU (issue 19): PFLlib's CNN on Fashion-MNIST, 20 clients, FedRep and local training on the
# pathological split (PFLlib's pairs), then FedRep and Ditto on Dirichlet(0.1), seed 0,
# ROUNDS (default 1000, ten times the CPU tables') rounds of 20 local steps, validation
# every EVERY (default 50) rounds; the round kept on validation, and PFLlib's best round on
# test beside it, labelled.
# About 3 minutes of install, then at most 6 minutes of runs (each stage under `timeout`; a
# stage cut short prints nothing, the rows before it stand). The data does not travel by
# itself: copy Debian's IDX files into the ignored .gpudata/ and carry that folder:
#
#     mkdir -p .gpudata/fashion-mnist
#     cp /usr/share/datasets/fashion-mnist/*.gz .gpudata/fashion-mnist/
#     device tool: run "bash benchmarks/gpu_personalized.sh", carry [".gpudata"], timeout_s 560
#
# Paste the tables into BENCHMARKS.md, issue 19's section, with the device.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f .gpudata/fashion-mnist/train-images-idx3-ubyte.gz ] \
    || { echo ".gpudata/fashion-mnist is missing (see the header)"; exit 2; }
export FEDMETA_DATA="$PWD/.gpudata"
source benchmarks/gpu_install.sh  # step, $out (absolute), $py

cnn=("model.name='cnn'" model.hidden=512 model.batch_norm=false)  # PFLlib's FedAvg CNN
bench() {  # seconds, setting, algorithms...
    local seconds=$1 setting=$2
    shift 2
    step "$setting: $* (CNN, ${ROUNDS:-1000} rounds, at most $seconds s)"
    (cd benchmarks && timeout "$seconds" "$py" personalized.py --runs "$out/runs" \
        --rounds "${ROUNDS:-1000}" --every "${EVERY:-50}" --seeds 0 --settings "$setting" \
        --threads 4 --algorithms "$@" --set "${cnn[@]}" \
        --out "$out/personalized-gpu.jsonl" > /dev/null)
}
bench 200 pathological fedrep local
bench 160 dir0.1 fedrep ditto

step "table"
(cd benchmarks && "$py" personalized.py --table "$out/personalized-gpu.jsonl")
