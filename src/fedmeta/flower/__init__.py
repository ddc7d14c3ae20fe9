"""fedmeta on Flower: the same learners and server pipeline as a ServerApp and a ClientApp
(`fedmeta.flower.server_app:app`, `fedmeta.flower.client_app:app`), for `flwr run` in
Flower's simulation or on a real deployment (SuperLink + SuperNodes)."""
