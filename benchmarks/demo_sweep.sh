#!/usr/bin/env bash
# Demo-config sweep: variants of `fedmeta demo`, each scored on 600 5-way 1-shot episodes of
# the 20 unseen evaluation alphabets (the round kept is the best on the meta-validation
# alphabets, as in the demo). Two modes:
#   BUDGET=240 bash benchmarks/demo_sweep.sh      # issue 2: the same wall-clock budget, all
#                                                 # at once (2 threads each; 2 cores a variant)
#   ROUNDS=250 bash benchmarks/demo_sweep.sh      # issue 16: the same compute (rounds x
#                                                 # local steps), JOBS at a time, 1 thread each
#                                                 # (ONLY="V6 V7": those variants only)
set -u
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
run() {
  name=$1; shift
  args=(); for a in "$@"; do args+=(--set "$a"); done
  python3 -m fedmeta.cli demo --quiet --out "$out/$name" "${common[@]}" "${args[@]}" \
    > "$out/$name.log" 2>&1
  echo "$name ($*): $(tail -1 "$out/$name.log") rounds=$(wc -l < "$out/$name/metrics.jsonl")"
}
if [ -n "${ROUNDS:-}" ]; then
  export OMP_NUM_THREADS=1
  R=$ROUNDS; H=$((ROUNDS / 2))
  common=(--set eval.every=$((ROUNDS / 5)))
  variants=(
    "V0 server.rounds=$R"
    "V1 server.rounds=$R learner.lr_schedule=cosine"
    "V2 server.rounds=$R learner.lr_schedule=cosine learner.lr=0.004"
    "V3 server.rounds=$H learner.lr_schedule=cosine learner.lr=0.004 learner.local_steps=20"
    "V4 server.rounds=$R learner.lr_schedule=cosine learner.lr=0.004 server.optimizer=adam server.lr=0.01"
    "V5 server.rounds=$H learner.lr_schedule=cosine learner.lr=0.004 server.clients_per_round=1 learner.local_steps=40"
    # narrower Conv-4s: 2.5x (32 channels) and about 1.7x (48) cheaper a round, so more rounds
    # in the demo's wall-clock budget (the rounds are what fits the 64-channel V2's time)
    "V6 server.rounds=$((ROUNDS * 12 / 5)) model.hidden=32 learner.lr_schedule=cosine learner.lr=0.004"
    "V7 server.rounds=$((ROUNDS * 5 / 3)) model.hidden=48 learner.lr_schedule=cosine learner.lr=0.004"
  )
  running=0
  for v in "${variants[@]}"; do
    case " ${ONLY:-${v%% *}} " in *" ${v%% *} "*) ;; *) continue ;; esac  # ONLY="V6 V7"
    run $v &
    running=$((running + 1))
    if [ "$running" -ge "${JOBS:-2}" ]; then wait -n; running=$((running - 1)); fi
  done
  wait
  exit
fi
B=${BUDGET:-240}
export OMP_NUM_THREADS=2
common=(--set run.time_budget_seconds="$B" --set server.rounds=100000 --set eval.every=0)
base="server.clients_per_round=2 learner.local_steps=10 learner.lr=0.002 task.queries=2"
run R1 $base data.rotations=false task.ways=10 &
run R2 $base data.rotations=true task.ways=10 &
run R3 $base data.rotations=false task.ways=10 learner.lr=0.001 &
run R4 $base data.rotations=false task.ways=20 &
run R5 $base data.rotations=false task.ways=5 &
run R6 $base data.rotations=true task.ways=20 &
run R7 $base data.rotations=true task.ways=5 &
wait
