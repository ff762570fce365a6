"""Ranking metrics without scikit-learn: ROC AUC (ties counted half) and accuracy."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U); None unless both classes are present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> float | None:
    labels = np.asarray(labels).astype(bool)
    if labels.size == 0:
        return None
    return float(((np.asarray(probabilities) >= threshold) == labels).mean())
