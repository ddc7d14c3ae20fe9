"""Writes the checkpoint `test_checkpoint.POSITIONAL` holds: round 2 of its LEGACY config, with
server state as fedmeta wrote it before chains named their stages. Run from a checkout of
commit e9b82ad: PYTHONPATH=src python tests/data/make_positional_checkpoint.py OUT."""

import sys
from pathlib import Path

from fedmeta.build import build_experiment
from fedmeta.config import load_config
from fedmeta.engine.checkpoint import save_checkpoint
from fedmeta.engine.simulation import Simulation

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_checkpoint import LEGACY  # noqa: E402

simulation = Simulation(build_experiment(load_config(None, LEGACY + ["server.rounds=2"])))
states = []
params = simulation.run([lambda round_index, params, state, metrics: states.append(state)])
save_checkpoint(Path(sys.argv[1]), params, states[-1], 2)
