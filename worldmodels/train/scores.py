"""Held-out scores of M's heads: the AUC of a ranking and the done head's quality. Used by
`train-rnn`'s held-out evaluation and by the done refit (`worldmodels.train.done_refit`)."""

from __future__ import annotations

import numpy as np


def done_quality(logit: np.ndarray, death: np.ndarray, mask: np.ndarray,
                 false_alarm: float = 0.01, bins: int = 10) -> dict[str, float]:
    """How well P(done) tells deaths from the other steps of whole held-out episodes: AUC, the
    recall of deaths at the threshold that fires on `false_alarm` of the other steps (a
    threshold-free recall, comparable between Ms), and calibration: the expected calibration
    error over `bins` bins of P(done) and the mean P(done) at deaths."""
    logit, death = logit[mask], death[mask]
    p = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    threshold = np.quantile(logit[~death], 1.0 - false_alarm) if (~death).any() else np.inf
    edges = np.minimum((p * bins).astype(int), bins - 1)
    ece = sum(abs(p[edges == b].mean() - death[edges == b].mean()) * np.mean(edges == b)
              for b in range(bins) if np.any(edges == b))
    out = {"heldout_done_recall_at_1pct": float(np.mean(logit[death] > threshold)),
           "heldout_done_ece": float(ece), "heldout_done_p_at_death": float(p[death].mean())}
    auc = rank_auc(logit, death)
    if auc is not None:
        out["heldout_done_auc"] = auc
    return out


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance a positive outranks a negative (ties count half);
    None without both classes."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata  # here: scipy.stats costs ~0.4 s to import, and only this needs it

    ranks = rankdata(scores)  # ties get their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
