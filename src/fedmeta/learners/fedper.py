"""FedPer (Arivazhagan, Aggarwal, Singh, Choudhary 2019, "Federated Learning with
Personalization Layers"): base layers averaged by FedAvg, the personalization layers (here
the classifier head) kept by each client; a client trains both together on its own data."""

from fedmeta.learners.local_layers import LocalLayers


class FedPer(LocalLayers):
    pass
