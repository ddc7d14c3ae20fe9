"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio, Vinyals 2020, "Rapid Learning or Feature
Reuse? Towards Understanding the Effectiveness of MAML"): MAML whose inner loop adapts only the
classifier head; the body is meta-learned by the outer loop alone."""

from fedmeta.learners.maml import MAML


class ANIL(MAML):
    def adapted(self, name: str) -> bool:
        return name.startswith("head.")
