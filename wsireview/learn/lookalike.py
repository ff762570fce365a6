"""Spreading verdicts to look-alike patches: nearest neighbours in feature space, within a radius
learned from the verdicts themselves.

A verdict on one patch says something about the patches that look like it: a dust speck marked
``artifact`` has twins elsewhere, a rejected mimic has neighbours that are mimics too. Each
verdict gives its unreviewed neighbours within the radius a soft label: the same class with a
weight falling from ``spread`` at distance 0 to 0 at the radius (the nearest verdict wins). A
lesion verdict never spreads into a slide labelled negative (its patches are known not lesion).

The radius: candidate radii are distances between reviewed patches, capped at the distance to
about the ``NEIGHBOURS``-th nearest patch of a reviewed one (a verdict reaches a handful of
look-alikes, never a whole slide). The radius is the largest candidate within which reviewed
pairs still agree (``PURITY`` of the pairs of reviewed patches closer than it share their
verdict); when no two verdicts of different classes are that close, the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # data imports nothing from here; this keeps it so
    from wsireview.learn.data import StackedRows

NEIGHBOURS = 8  # a verdict reaches about this many look-alikes at most
PURITY = 0.9  # share of reviewed pairs within the radius that must agree
LESION, NOT_LESION, ARTIFACT = 1, 0, 2  # verdict classes as numbers


@dataclass
class Spread:
    """Soft labels for unreviewed patches (rows of the cohort's feature matrix)."""

    radius: float
    rows: np.ndarray  # rows that received a soft label
    label: np.ndarray  # the class of the nearest verdict (LESION, NOT_LESION or ARTIFACT)
    weight: np.ndarray  # spread x (1 - distance / radius)


BLOCK_ELEMENTS = 1 << 22  # distances computed at a time: 16 MB of float32 whatever the cohort and verdicts


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.square(a).sum(1)[:, None] - 2.0 * a @ b.T + np.square(b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _block_rows(n_columns: int, most: int = 8192) -> int:
    """Rows per block so that a block of distances to ``n_columns`` points holds about ``BLOCK_ELEMENTS``."""
    return int(np.clip(BLOCK_ELEMENTS // max(1, n_columns), 16, most))


def _close_pairs(points: np.ndarray, below: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, distance)`` of the pairs ``i < j`` of ``points`` closer than ``below``, in blocks."""
    step = _block_rows(points.shape[0])
    found_i, found_j, found_d = [], [], []
    for start in range(0, points.shape[0], step):
        d = np.sqrt(_sq_dist(points[start : start + step], points))
        i, j = np.nonzero(d < below)
        i += start
        upper = i < j
        found_i.append(i[upper])
        found_j.append(j[upper])
        found_d.append(d[i[upper] - start, j[upper]])
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def learn_radius(features: np.ndarray | StackedRows, reviewed: np.ndarray, classes: np.ndarray, seed: int = 0) -> float:
    """The look-alike radius for ``reviewed`` rows of ``features`` with verdict ``classes``.

    Only pairs of reviewed patches closer than the cap can decide it, so only those are kept: the
    pairs are found in blocks, and thousands of verdicts never make a matrix of all their pairs.
    """
    if reviewed.size == 0:
        return 0.0
    rng = np.random.default_rng([seed, 41])
    sample = features[rng.choice(features.shape[0], size=min(features.shape[0], 20_000), replace=False)]
    scale = features.shape[0] / sample.shape[0]
    # Distance to about the NEIGHBOURS-th nearest patch of the cohort, median over reviewed patches.
    kth = min(sample.shape[0] - 1, max(1, int(round(NEIGHBOURS / scale))))
    probe = features[reviewed[: 500]]
    cap = float(np.median(np.sqrt(np.partition(_sq_dist(probe, sample), kth, axis=1)[:, kth])))
    if reviewed.size < 2:
        return cap
    i, j, pair_d = _close_pairs(features[reviewed], cap)
    if pair_d.size == 0:
        return cap
    same = classes[i] == classes[j]
    order = np.lexsort((j, i, pair_d))  # by distance; ties in the order of the pairs (as before: row-major)
    pair_d, same = pair_d[order], same[order]
    if same.all():
        return cap
    purity = np.cumsum(same) / np.arange(1, same.size + 1)
    ok = np.flatnonzero(purity >= PURITY)
    return float(pair_d[ok[-1]]) if ok.size else float(pair_d[0]) * 0.5


def spread_verdicts(features: np.ndarray | StackedRows, reviewed: np.ndarray, classes: np.ndarray, negative_rows: np.ndarray,
                    spread: float, seed: int = 0) -> Spread:
    """Soft labels for the unreviewed look-alikes of ``reviewed`` rows (verdict ``classes``).

    ``features``: the cohort's rows, a matrix or anything indexed like one
    (``wsireview.learn.data.StackedRows``); read in blocks whose distances to the verdicts hold
    ``BLOCK_ELEMENTS``, so memory does not grow with the cohort or the verdicts (time does: every
    patch is compared with every verdict).
    ``negative_rows`` (bool over rows): patches of slides labelled negative, where a lesion
    verdict does not spread.
    """
    empty = Spread(0.0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if reviewed.size == 0 or spread <= 0:
        return empty
    radius = learn_radius(features, reviewed, classes, seed)
    if radius <= 0:
        return empty
    src = features[reviewed]
    src_sq = np.square(src).sum(1)
    lesion_src = classes == LESION
    n = features.shape[0]
    best_d = np.full(n, np.inf)
    best_c = np.zeros(n, np.int64)
    step = _block_rows(src.shape[0])
    for start in range(0, n, step):
        x = features[start : start + step]
        d = x @ src.T
        d *= -2.0
        d += np.square(x).sum(1)[:, None]
        d += src_sq[None, :]
        np.maximum(d, 0.0, out=d)
        blocked = negative_rows[start : start + step]
        if blocked.any() and lesion_src.any():
            d[np.ix_(np.flatnonzero(blocked), np.flatnonzero(lesion_src))] = np.inf
        j = np.argmin(d, axis=1)
        best_d[start : start + step] = np.sqrt(d[np.arange(d.shape[0]), j])
        best_c[start : start + step] = classes[j]
    best_d[reviewed] = np.inf  # a reviewed patch keeps its own verdict
    rows = np.flatnonzero(best_d < radius)
    return Spread(radius, rows, best_c[rows], spread * (1.0 - best_d[rows] / radius))
