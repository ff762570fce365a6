"""Turning predictions into per-patch scores: attention normalised within each slide, its rank,
the instance probability and an uncertainty.

The uncertainty is the disagreement of an ensemble when there is one (the cross-validation fold
models a round trains anyway, with the final model): the mutual information between a patch's
label and the member (BALD), divided by log 2 so it lies in 0..1. Members that agree on 0.5 are
not uncertain in this sense, members that split 0.1 / 0.9 are. Without an ensemble (no
cross-validation) it is the margin ``1 - |2p - 1|`` of the one model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsireview.learn.train import Prediction


def uncertainty(probability: np.ndarray) -> np.ndarray:
    """1 at p = 0.5, 0 at p = 0 or 1 (a margin measure: cheap and monotone in entropy)."""
    return 1.0 - np.abs(2.0 * np.asarray(probability, dtype=np.float64) - 1.0)


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def disagreement(members: np.ndarray) -> np.ndarray:
    """BALD of (members, patches) probabilities: H(mean) - mean(H), in 0..1 (divided by log 2)."""
    members = np.asarray(members, dtype=np.float64)
    return np.clip((_entropy(members.mean(0)) - _entropy(members).mean(0)) / np.log(2.0), 0.0, 1.0)


@dataclass
class PatchScores:
    """Scores of every patch of every scored slide, as flat arrays in the same order."""

    patch_ids: np.ndarray
    slide_ids: np.ndarray
    attention: np.ndarray  # max = 1 within each slide
    attention_rank: np.ndarray  # 1 = highest attention in its slide
    probability: np.ndarray
    uncertainty: np.ndarray

    def __len__(self) -> int:
        return int(self.patch_ids.shape[0])


def score_patches(slide_ids: list[int], patch_ids: list[np.ndarray], predictions: list[Prediction],
                  members: list[list[np.ndarray]] | None = None) -> PatchScores:
    """Scores of every patch; ``members``: other models' P(lesion) per bag (the CV folds), for the
    ensemble uncertainty."""
    att_parts, rank_parts, sid_parts, unc_parts = [], [], [], []
    for i, (sid, ids, pred) in enumerate(zip(slide_ids, patch_ids, predictions)):
        att = pred.attention.astype(np.float64)
        att_parts.append(att / att.max() if att.size and att.max() > 0 else att)
        order = np.argsort(-att, kind="stable")
        ranks = np.empty(att.size, dtype=np.int64)
        ranks[order] = np.arange(1, att.size + 1)
        rank_parts.append(ranks)
        sid_parts.append(np.full(ids.shape[0], sid, dtype=np.int64))
        # Slide by slide: the ensemble's temporaries are one slide's, not (members x patches) of the cohort.
        p = pred.instance_probability.astype(np.float64)
        unc_parts.append(disagreement(np.stack([p] + [m[i] for m in members])) if members else uncertainty(p))
    return PatchScores(
        patch_ids=np.concatenate(patch_ids).astype(np.int64),
        slide_ids=np.concatenate(sid_parts),
        attention=np.concatenate(att_parts),
        attention_rank=np.concatenate(rank_parts),
        probability=np.concatenate([p.instance_probability.astype(np.float64) for p in predictions]),
        uncertainty=np.concatenate(unc_parts),
    )
