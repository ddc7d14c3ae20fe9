"""Personalized federated hypernetworks (Shamsian, Navon, Fetaya, Chechik 2021, "Personalized
Federated Learning using Hypernetworks", pFedHN), for few-shot clients.

The server holds a hypernetwork and one learned embedding per training client; the hypernetwork
maps a client's embedding to that client's model weights. A round:

1. the server generates each sampled client's weights `theta_i = h(v_i; phi)` and sends them;
2. the client trains them locally, as a Prototypical Network (Snell et al. 2017) on its own
   episodes, and sends back `delta_i = theta_local - theta_i`;
3. the server turns each delta into an update of its own params by the chain rule,
   `J_i^T delta_i` with `J_i` the Jacobian of `theta_i` in `(phi, v_i)` (pFedHN, Eq. 4), and
   the usual pipeline averages those and steps the server optimizer.

The client never sees the hypernetwork, and the server sees what it would under FedAvg (a model
delta). A new client learns only its embedding: starting from the training clients' mean, it
takes `embedding_steps` SGD steps of `embedding_lr` on its support set (each support example
scored against the support's own prototypes), through the fixed hypernetwork (pFedHN, Sec. 5.4,
generalization to novel clients); its query set is then scored by prototypes of the generated
model.

Everything after the pull-back is the ordinary pipeline on the server's params: norm bounds,
DP clipping and noise bound and hide each client's pulled-back row (in DP-FedAvg's trusted-server
model). Refused: robust rules (a coordinate-wise rule would discard each embedding's update,
which only its own client's row holds), secure aggregation (the server must see each delta to
pull it back) and compression (it would compress the pulled-back rows, not what a client
sends). The pull-back holds one row the size of the hypernetwork per client (Conv-4 of 64
channels: 11.4M values, 46 MB in float32).

A deviation from the paper: the hypernetwork generates a per-client offset to a learned shared
copy of the weights, its output layers starting at zero, so that training starts from the target
model's standard initialization.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

from fedmeta.data import EpisodeSampler
from fedmeta.learners.inner import sgd_steps
from fedmeta.learners.protonet import ProtoNet, prototype_logits, prototypes
from fedmeta.optim import Transform
from fedmeta.params import Params, detached, tree_stack
from fedmeta.server import Round


class HyperNetwork(nn.Module):
    """A client embedding [D] -> the target model's params: each the shared copy plus a linear
    head of an MLP (three hidden layers of `hidden` units, as pFedHN's) on the embedding.
    `embeddings` holds one embedding per training client (N(0, 1) initialized)."""

    def __init__(self, target: nn.Module, num_clients: int, embedding_dim: int,
                 hidden: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(num_clients, embedding_dim)
        self.body = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        named = list(target.named_parameters())
        self.names = [name for name, _ in named]
        self.shared = nn.ParameterList([nn.Parameter(p.detach().clone()) for _, p in named])
        self.heads = nn.ModuleList([nn.Linear(hidden, p.numel()) for _, p in named])
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, embedding: torch.Tensor) -> Params:
        features = self.body(embedding)
        return {name: shared + head(features).view(shared.shape)
                for name, shared, head in zip(self.names, self.shared, self.heads)}


class PFedHN(ProtoNet):
    """pFedHN with a Prototypical-Network target model: the server's params are the
    hypernetwork's (with the clients' embeddings), the clients' are the generated model's."""

    personalized = True
    takes_num_clients = True
    hyperparameters = ("embedding_dim", "hypernet_hidden", "embedding_steps", "embedding_lr")
    adaptation = ("embedding_steps", "embedding_lr")
    adaptation_rate = "embedding_lr"

    def __init__(self, model: nn.Module, sampler: EpisodeSampler, local_optimizer: Transform,
                 local_steps: int = 1, tasks_per_step: int = 1, *, num_clients: int,
                 embedding_dim: int = 32, hypernet_hidden: int = 100, embedding_steps: int = 10,
                 embedding_lr: float = 0.1) -> None:
        super().__init__(model, sampler, local_optimizer, local_steps, tasks_per_step)
        self.hypernet = HyperNetwork(model, num_clients, embedding_dim, hypernet_hidden)
        self.embedding_steps, self.embedding_lr = embedding_steps, embedding_lr

    def init_params(self) -> Params:
        return detached(dict(self.hypernet.named_parameters()))

    def to(self, device: torch.device) -> "PFedHN":
        self.hypernet.to(device)
        return super().to(device)

    def generate(self, params: Params, embedding: torch.Tensor) -> Params:
        """The target model's params for a client of `embedding`."""
        return functional_call(self.hypernet, params, (embedding,))

    def client_params(self, params: Params, clients: torch.Tensor) -> Params:
        with torch.no_grad():
            return vmap(partial(self.generate, params))(params["embeddings.weight"][clients])

    def client_model(self, params: Params) -> Params:
        return dict(self.model.named_parameters())

    def server_round(self, params: Params, rnd: Round) -> Round:
        """Each client's delta pulled back to the server's params: `J_i^T delta_i` (pFedHN,
        Eq. 4), its embedding's part in the client's own row of the table."""
        rows = []
        for row, client in enumerate(rnd.clients.tolist()):
            _, pullback = vjp(lambda p: self.generate(p, p["embeddings.weight"][client]), params)
            (pulled,) = pullback({k: v[row] for k, v in rnd.deltas.items()})
            rows.append(pulled)
        if not rows:
            return rnd.with_deltas({k: v.new_zeros(0, *v.shape) for k, v in params.items()})
        return rnd.with_deltas(tree_stack(rows))

    def support_loss(self, model: Params, support_x: torch.Tensor,
                     support_y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the support examples against the support's own prototypes."""
        embedded = self.forward(model, support_x)
        return F.cross_entropy(prototype_logits(embedded, prototypes(embedded, support_y)),
                               support_y)

    def new_client(self, params: Params, support_x: torch.Tensor,
                   support_y: torch.Tensor) -> Params:
        """The generated model of a client never seen in training, its embedding learned from
        its support set alone (the hypernetwork fixed)."""
        embedding = {"v": params["embeddings.weight"].mean(0)}
        if self.embedding_steps:
            embedding, _ = sgd_steps(
                lambda e: self.support_loss(self.generate(params, e["v"]), support_x, support_y),
                embedding, self.embedding_lr, self.embedding_steps)
        with torch.no_grad():
            return self.generate(params, embedding["v"])

    def episode_accuracy(self, params: Params, support_x: torch.Tensor,
                         support_y: torch.Tensor, query_x: torch.Tensor,
                         query_y: torch.Tensor) -> torch.Tensor:
        model = self.new_client(params, support_x, support_y)
        return super().episode_accuracy(model, support_x, support_y, query_x, query_y)
