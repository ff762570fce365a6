"""Turning predictions into per-patch scores: attention normalised within each slide, its rank,
the instance probability and an uncertainty."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsireview.learn.train import Prediction


def uncertainty(probability: np.ndarray) -> np.ndarray:
    """1 at p = 0.5, 0 at p = 0 or 1 (a margin measure: cheap and monotone in entropy)."""
    return 1.0 - np.abs(2.0 * np.asarray(probability, dtype=np.float64) - 1.0)


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


def score_patches(slide_ids: list[int], patch_ids: list[np.ndarray], predictions: list[Prediction]) -> PatchScores:
    att_parts, rank_parts, sid_parts = [], [], []
    for sid, ids, pred in zip(slide_ids, patch_ids, predictions):
        att = pred.attention.astype(np.float64)
        att_parts.append(att / att.max() if att.size and att.max() > 0 else att)
        order = np.argsort(-att, kind="stable")
        ranks = np.empty(att.size, dtype=np.int64)
        ranks[order] = np.arange(1, att.size + 1)
        rank_parts.append(ranks)
        sid_parts.append(np.full(ids.shape[0], sid, dtype=np.int64))
    probability = np.concatenate([p.instance_probability.astype(np.float64) for p in predictions])
    return PatchScores(
        patch_ids=np.concatenate(patch_ids).astype(np.int64),
        slide_ids=np.concatenate(sid_parts),
        attention=np.concatenate(att_parts),
        attention_rank=np.concatenate(rank_parts),
        probability=probability,
        uncertainty=uncertainty(probability),
    )
