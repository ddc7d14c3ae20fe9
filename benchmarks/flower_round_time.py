"""Seconds per round of a fedmeta deployment on loopback, against Flower's own floor in the
same run: a SuperLink and 3 SuperNodes on 127.0.0.1 (examples/flower, each node reading its
own client file), FedMeta (MAML) on a tiny Conv-4; before round 1 the ServerApp times
`--probes` rounds of no-op messages to the same nodes (`flower.floor_probes`: a no-op
ClientApp, what no round can go below). Round 1 includes starting each node's worker
(`fedmeta.flower.node_worker`); the steady state is the median of the later rounds.

    python benchmarks/flower_round_time.py [--rounds 6] [--probes 5] [--hidden 8]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from flower_deployment import Deployment  # noqa: E402 (the tests' loopback deployment)

APP = ROOT / "examples" / "flower"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "config.toml").write_text('[data]\ndataset = "omniglot"\npath = "bundled"\n')
        subprocess.run([sys.executable, "-m", "fedmeta.cli", "export-clients",
                        str(scratch / "config.toml"), str(scratch / "clients"), "--clients",
                        "3", "--held-out", "0", "--validation", "0"], check=True)
        files = sorted((scratch / "clients").glob("client_*.npz"))
        with Deployment(scratch / "deployment") as deployment:
            deployment.start_superlink()
            nodes = [deployment.start_supernode(f"node{i}", f'data-path="{path}"')
                     for i, path in enumerate(files)]
            for node in nodes:
                if not node.wait_for("SuperNode ID:", 90):
                    raise RuntimeError(node.text()[-2000:])
            out = scratch / "runs"
            status = deployment.run(APP, " ".join([
                f"server.rounds={args.rounds}", "server.clients_per_round=3",
                "server.min_clients=3", "eval.every=0", f"run.checkpoint_every={args.rounds}",
                f'run.out_dir="{out}"',
                f'set="model.hidden={args.hidden} flower.floor_probes={args.probes}"']))
            if status["status"] != "finished:completed":
                raise RuntimeError(deployment.logs(status["run-id"]))
        (run,) = out.iterdir()
        rounds = [json.loads(line)["seconds"]
                  for line in (run / "metrics.jsonl").read_text().splitlines()]
        floor = json.loads((run / "flower_floor.json").read_text())["seconds"]
    steady, base = statistics.median(rounds[1:]), statistics.median(floor)
    print(json.dumps({"nodes": 3, "model": f"conv4 hidden {args.hidden}", "algorithm": "maml",
                      "floor_s": [round(s, 2) for s in floor],
                      "round_s": [round(s, 2) for s in rounds],
                      "floor_median_s": round(base, 2), "steady_round_median_s": round(steady, 2),
                      "ratio_steady_round_to_floor": round(steady / base, 3),
                      "ratio_first_round_to_floor": round(rounds[0] / base, 3)}))


if __name__ == "__main__":
    main()
