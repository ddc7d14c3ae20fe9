"""First-order MAML (Finn, Abbeel, Levine 2017, Sec. 5.2): MAML with the inner-loop gradients
treated as constants, so the meta-gradient is the query-loss gradient at the adapted weights
(the second-order term through the inner updates is dropped)."""

from fedmeta.learners.maml import MAML


class FOMAML(MAML):
    first_order = True
