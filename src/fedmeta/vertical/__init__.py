"""Vertical federated learning: parties hold different features of the same people, aligned
by private set intersection; a split network whose cut-layer embeddings and their gradients
are all that cross between parties."""
