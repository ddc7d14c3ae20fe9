"""A vertical run deployed on Flower: a SuperLink and a SuperNode per party as real processes on
127.0.0.1 (examples/flower_vertical), each party reading its own CSV. Without protection noise
the deployment computes the simulation's split network (scores, loss, bytes): each party's
worker keeps its state from message to message (PSI keys, rows, model, the step's pull-back);
more steps are tested in-process (test_vertical_protocol.py)."""

import json
from pathlib import Path

import pytest

from fedmeta.config import load_config
from fedmeta.vertical.parties import breast_cancer_departments
from fedmeta.vertical.tabular import aligned_parties, one_repeat
from flower_deployment import Deployment
from test_vertical_cli import write_party

APP = Path(__file__).parents[1] / "examples" / "flower_vertical"
QUICK = ["vertical.epochs=1", "vertical.batch_size=256"]  # one step: the whole batch


def test_vertical_run_on_supernodes_matches_the_simulation(tmp_path):
    files = []
    for p, party in enumerate(breast_cancer_departments(3, 0.8, seed=0)):
        files.append(tmp_path / f"department{p}.csv")
        write_party(files[-1], party.ids, party.x, party.y)
    with Deployment(tmp_path / "deployment") as deployment:
        deployment.start_superlink()
        nodes = [deployment.start_supernode(f"party{p}", f'party-file="{path}" party={p}')
                 for p, path in enumerate(files)]
        for node in nodes:
            assert node.wait_for("SuperNode ID:", 90), node.text()[-2000:]
        out = tmp_path / "runs"
        status = deployment.run(APP, " ".join(QUICK + [f'run.out_dir="{out}"']))
        assert status["status"] == "finished:completed", deployment.logs(status["run-id"])
        (run,) = out.iterdir()
        summary = json.loads((run / "summary.json").read_text())
    files_config = ["vertical.data='files'", f"vertical.party_files={[str(f) for f in files]}"]
    config = load_config("configs/vertical_breast_cancer.toml", QUICK + files_config)
    data = aligned_parties(config)
    simulated = one_repeat(config, data, 0)
    assert summary["deployed"] and summary["aligned_rows"] == len(data.y)
    assert [p["name"] for p in summary["parties"]] == [f.name for f in files]
    assert summary["results"]["vertical"] == pytest.approx(simulated["vertical"], rel=1e-5)
    assert summary["bytes_per_epoch"] == simulated["bytes_per_epoch"]
    assert summary["psi_bytes"] == data.psi_bytes
