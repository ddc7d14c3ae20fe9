#!/usr/bin/env bash
# The one prepared GPU check (issue 15), at most ~8 minutes on a machine with a CUDA GPU:
# installs a CUDA build of torch and fedmeta in .gpuvenv, runs the device tests (the same
# rounds on CPU and GPU, a GPU checkpoint resumed on the CPU), `fedmeta bench` on the GPU
# (fedmeta against the compute ceiling, the naive loop and the torch.func MAML example), the
# execution rule's loop/vmap/chunk measurement, and a short training run per algorithm; then
# prints one table. Every output lands under $OUT (or benchmarks/results/gpu). Paste the table
# and the bench lines into BENCHMARKS.md.
#
#     bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/gpu_install.sh  # step, $out (absolute), $py and .gpuvenv/bin/fedmeta
mkdir -p "$out/runs"

step "device tests"
timeout 240 $py -m pytest -p no:cacheprovider -q tests/test_gpu.py tests/test_device.py \
    tests/test_cohort.py 2>&1 | tail -15 | tee "$out/tests.txt"

step "fedmeta bench on the GPU (--no-flower: Flower's simulation is the CPU's question)"
for workload in maml-omniglot fomaml-omniglot fedavg-synthetic; do
    timeout 100 .gpuvenv/bin/fedmeta bench "$workload" --rounds 5 --no-flower --json \
        | tee -a "$out/bench.jsonl"
done

step "execution rule: loop vs vmap by chunk size, fp32 and bf16 autocast"
timeout 150 $py benchmarks/execution.py --rounds 3 --chunks 4,16,64 --precisions fp32,bf16 \
    | tee "$out/execution.jsonl"

step "a short training run per algorithm (bundled Omniglot, 5-way 1-shot, 100 rounds)"
for algorithm in protonet fomaml maml metasgd anil reptile perfedavg fedavg-ft; do
    timeout 60 .gpuvenv/bin/fedmeta run src/fedmeta/assets/demo.toml --quiet \
        --out "$out/runs/$algorithm" --set "learner.algorithm='$algorithm'" \
        --set task.ways=5 --set server.rounds=100 --set eval.every=25 \
        --set run.checkpoint_every=0 --set learner.local_steps=5 2>&1 | tail -1
done
for algorithm in protonet maml; do  # what bf16 autocast does to accuracy
    timeout 60 .gpuvenv/bin/fedmeta run src/fedmeta/assets/demo.toml --quiet \
        --out "$out/runs/$algorithm-bf16" --set "learner.algorithm='$algorithm'" \
        --set task.ways=5 --set server.rounds=100 --set eval.every=25 \
        --set run.checkpoint_every=0 --set learner.local_steps=5 \
        --set "run.precision='bf16'" 2>&1 | tail -1
done

step "table"
$py - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(f"{'workload':18} {'device':28} {'exec':5} {'tasks/s':>9} {'/ceiling':>9} "
      f"{'naive/fm':>9} {'functorch/fm':>13}")
for line in (out / "bench.jsonl").read_text().splitlines():
    r = json.loads(line)
    ratios = r["ratios"]
    print(f"{r['workload']:18} {r['device']:28} {r['execution']:5} {r['tasks_per_s']:9.1f} "
          f"{ratios['fedmeta_over_ceiling']:9.2f} "
          f"{ratios.get('naive_loop_over_fedmeta', float('nan')):9.2f} "
          f"{ratios.get('functorch_maml_over_fedmeta', float('nan')):13.2f}")
for line in (out / "execution.jsonl").read_text().splitlines():
    r = json.loads(line)
    print(r["workload"], "seconds/round over the loop's:",
          ", ".join(f"{k} {v:.2f}" for k, v in r["over_loop"].items()))
print(f"\n{'algorithm':10} {'accuracy':>9} {'ci95':>6} {'train s':>8}  device")
for run in sorted((out / "runs").iterdir()):
    summary = run / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        m = s["meta_test"]
        print(f"{run.name:10} {100 * m['accuracy']:8.2f}% {100 * m['ci95']:5.2f} "
              f"{s['train_seconds']:8.1f}  {s['device']}")
    else:
        print(f"{run.name:10} (no summary: failed or timed out)")
EOF
