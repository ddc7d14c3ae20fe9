"""Simulation speed: fedmeta's rounds against a compute ceiling, a naive per-client PyTorch
loop and Flower's simulation, measured in the same run (`fedmeta bench`)."""
