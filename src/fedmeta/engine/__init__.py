"""The simulation engine: cohorts, rounds, callbacks, run directories, checkpoints."""
