"""The server optimizer stage: the aggregated delta is a pseudo-gradient (its negation) fed to
a functional optimizer, as in FedOpt (Reddi et al. 2021). `sgd(1.0)` is plain FedAvg."""

from fedmeta.optim import Transform
from fedmeta.params import tree_map
from fedmeta.server.chain import Round, Stage


def server_optimizer(transform: Transform) -> Stage:
    def apply(rnd: Round, state: dict) -> tuple[Round, dict]:
        if not rnd.aggregated:
            raise ValueError("the server optimizer must come after an aggregator in the chain")
        step, state = transform.update(tree_map(lambda d: -d, rnd.deltas), state)
        return rnd.with_deltas(step), state

    return Stage(transform.init, apply)
