#!/usr/bin/env bash
# Demo-config sweep: variants of `fedmeta demo` trained for the same wall-clock budget, all at
# once (2 torch threads each; use a machine with 2 cores per variant), each scored on 600
# 5-way 1-shot episodes of the 20 unseen evaluation alphabets. Usage:
#   BUDGET=240 bash benchmarks/demo_sweep.sh
set -u
B=${BUDGET:-240}
export OMP_NUM_THREADS=2
out=$(mktemp -d)
run() {
  name=$1; shift
  args=(); for a in "$@"; do args+=(--set "$a"); done
  python3 -m fedmeta.cli demo --quiet --out "$out/$name" --set run.time_budget_seconds="$B" \
    --set server.rounds=100000 --set eval.every=0 "${args[@]}" > "$out/$name.log" 2>&1
  echo "$name ($*): $(tail -1 "$out/$name.log") rounds=$(wc -l < "$out/$name/metrics.jsonl")"
}
base="server.clients_per_round=2 learner.local_steps=10 learner.lr=0.002 task.queries=2"
run R1 $base data.rotations=false task.ways=10 &
run R2 $base data.rotations=true task.ways=10 &
run R3 $base data.rotations=false task.ways=10 learner.lr=0.001 &
run R4 $base data.rotations=false task.ways=20 &
run R5 $base data.rotations=false task.ways=5 &
run R6 $base data.rotations=true task.ways=20 &
run R7 $base data.rotations=true task.ways=5 &
wait
