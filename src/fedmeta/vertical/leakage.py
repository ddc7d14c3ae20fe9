"""Label leakage through the gradients a label party sends back (Li, Sun, Wang, Yang, Gao,
Yu, Gerber, Kuo, Xie 2022, "Label Leakage and Protection in Two-party Split Learning", ICLR).

In binary classification, the gradient of person i's loss with respect to its embedding is
(p_i - y_i) times a vector common to the batch, to first order. So a non-label party that only
sees the gradients it is sent can tell the classes apart:

- the norm attack scores each gradient by its L2 norm: where positives are rare, the model
  predicts them poorly and their gradients are the longer ones;
- the direction (cosine) attack scores each gradient by its cosine similarity with the
  gradient of one example the attacker knows to be positive: same class, same direction.

Each attack's success is the ROC AUC of its scores against the true labels (0.5: no better than
chance), per batch, averaged over the batches that hold both classes.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from fedmeta.vertical.split import StepRecord


def norm_scores(gradients: torch.Tensor) -> torch.Tensor:
    """The norm attack's score of each gradient row [B, E] -> [B]."""
    return torch.linalg.vector_norm(gradients, dim=1)


def cosine_scores(gradients: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The direction attack's score of each row: its cosine with the `reference` gradient."""
    return F.cosine_similarity(gradients, reference.unsqueeze(0), dim=1)


def attack_aucs(records: Sequence[StepRecord], positive: int = 1) -> dict[str, float]:
    """Mean ROC AUC of the norm and cosine attacks over the recorded batches holding both
    classes (for the cosine attack, the batch's first positive is the known reference and is
    left out of its scoring). NaN where no batch qualifies."""
    norm_aucs, cosine_aucs = [], []
    for record in records:
        truth = (record.labels == positive).numpy()
        if truth.all() or not truth.any():
            continue
        norm_aucs.append(roc_auc_score(truth, norm_scores(record.gradients).numpy()))
        reference = int(np.flatnonzero(truth)[0])
        rest = np.arange(len(truth)) != reference
        if truth[rest].any():
            scores = cosine_scores(record.gradients, record.gradients[reference]).numpy()
            cosine_aucs.append(roc_auc_score(truth[rest], scores[rest]))
    mean = lambda values: float(np.mean(values)) if values else float("nan")  # noqa: E731
    return {"norm_auc": mean(norm_aucs), "cosine_auc": mean(cosine_aucs)}
