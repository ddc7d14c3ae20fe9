"""FedAvg+FT from a finished FedAvg run: the model the run kept (selected on its
meta-validation clients, without fine-tuning) fine-tuned on each meta-test task's support, its
query then scored, on the run's own meta-test stream (so the FedAvg and FedAvg+FT numbers are
paired, task for task).

A FedAvg-FT run of its own validates with fine-tuning too, which under a time budget costs
it most of its training (on FEMNIST writers at 12 minutes: 32 rounds against FedAvg's 356);
training is FedAvg's either way, so this scores FedAvg's training with FT's evaluation.

With several `--lr`, the rate is chosen on the run's meta-validation clients
(`fedmeta.adaptation`), as `fedmeta eval --choose` does, and only the chosen one meta-tested.

    python benchmarks/finetuned.py runs/converged/fedavg-femnist-writer --steps 50 \
        --lr 0.003 0.01 0.03
"""

import argparse
import json
from pathlib import Path

from fedmeta.adaptation import Candidates, choose_adaptation
from fedmeta.engine.rundir import RunDirectory
from fedmeta.engine.simulation import Simulation
from fedmeta.resume import restore_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished fedavg run directory")
    parser.add_argument("--steps", type=int, default=50, help="fine-tuning steps (SGD)")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.01], help="fine-tuning "
                        "rate; several: the one the meta-validation clients score best")
    parser.add_argument("--episodes", type=int, help="meta-test tasks (default: the run's)")
    args = parser.parse_args()
    run = RunDirectory.open(args.run_dir, "finetuned.py")
    summary = json.loads(run.summary_path.read_text())
    experiment, params, _, round_index, selected = restore_run(
        run, run.latest_checkpoint(), overrides=[
            "learner.algorithm='fedavg-ft'", f"learner.finetune_steps={args.steps}",
            f"learner.finetune_lr={args.lr[0]}"])
    if selected is not None:
        round_index, params, _ = selected
    tried = []
    if len(args.lr) > 1:
        experiment, _, tried = choose_adaptation(experiment, params, None, Candidates(
            "learner.finetune_lr", tuple(map(str, args.lr))))
    episodes = args.episodes or summary["meta_test"]["episodes"]
    result = Simulation(experiment).evaluate(params, episodes)
    print(json.dumps({"run": str(args.run_dir), "round": round_index, "steps": args.steps,
                      "lr": experiment.config.learner.finetune_lr, "validation": tried,
                      "fedavg_accuracy": summary["meta_test"]["accuracy"],
                      **{k.removeprefix("test_"): v for k, v in result.items()}}))


if __name__ == "__main__":
    main()
