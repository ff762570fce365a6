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

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # data imports nothing from here; this keeps it so
    from wsireview.learn.data import StackedRows

NEIGHBOURS = 8  # a verdict reaches about this many look-alikes at most
RADIUS_SAMPLE = 20_000  # patches the radius's cap is measured on (see learn_radius)
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
    sample = features[rng.choice(features.shape[0], size=min(features.shape[0], RADIUS_SAMPLE), replace=False)]
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


KEPT_NEIGHBOURS = 32  # nearest rows remembered per verdict, at least (the radius reaches about NEIGHBOURS)


def kept_neighbours(n: int) -> int:
    """Nearest rows to remember per verdict in a cohort of ``n`` patches. The cap is measured on a
    sample of ``RADIUS_SAMPLE``: past a few hundred thousand patches its nearest sampled neighbour
    stands for the ``n / RADIUS_SAMPLE``-th of the cohort, so a verdict reaches that many."""
    return min(n, max(KEPT_NEIGHBOURS, 4 * -(-n // RADIUS_SAMPLE)))


@dataclass
class Neighbours:
    """Each verdict's ``KEPT_NEIGHBOURS`` nearest patches of the cohort under one projection:
    computed once per verdict, so a round compares only its new verdicts with every patch."""

    verdict_ids: np.ndarray  # (R,) patch ids of the reviewed patches
    ids: np.ndarray  # (R, M) patch ids of their nearest patches, nearest first
    dist: np.ndarray  # (R, M) their distances

    @classmethod
    def empty(cls, m: int) -> "Neighbours":
        return cls(np.zeros(0, np.int64), np.zeros((0, m), np.int64), np.zeros((0, m), np.float32))

    @classmethod
    def load(cls, path: Path, m: int) -> "Neighbours":
        try:
            with np.load(path) as data:
                found = cls(data["verdict_ids"], data["ids"], data["dist"])
        except (OSError, ValueError, KeyError):
            return cls.empty(m)
        return found if found.ids.shape[1] == m else cls.empty(m)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".partial.npz")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, verdict_ids=self.verdict_ids, ids=self.ids, dist=self.dist)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _scan(features: np.ndarray | StackedRows, sources: np.ndarray, radius: float, keep: int) -> tuple[np.ndarray, ...]:
    """One blocked pass over every row against ``sources``: the (row, source, distance) pairs
    closer than ``radius`` and each source's ``keep`` nearest rows ((S, keep) rows and distances).

    Distances are laid out one source per row (S, block), so choosing each source's nearest rows
    partitions contiguous memory."""
    w = np.hstack([-2.0 * sources, np.square(sources).sum(1)[:, None]]).astype(np.float32)  # (S, K + 1)
    n, s_count = features.shape[0], sources.shape[0]
    top_r = np.zeros((s_count, 0), np.int64)
    top_d = np.zeros((s_count, 0), np.float32)
    pair_r, pair_s, pair_d = [], [], []
    step = max(_block_rows(s_count), keep)
    for start in range(0, n, step):
        x = np.asarray(features[start : start + step], dtype=np.float32)
        x1 = np.empty((x.shape[1] + 1, x.shape[0]), np.float32)
        x1[:-1], x1[-1] = x.T, 1.0
        d = w @ x1  # (S, block) squared distances once |x|^2 is added; square roots only for pairs kept
        d += np.square(x).sum(1)[None, :]
        c, r = np.nonzero(d < radius * radius)
        pair_r.append(r + start)
        pair_s.append(c)
        pair_d.append(np.sqrt(np.maximum(d[c, r], 0.0)))
        if keep:  # the block's own nearest rows per source, then merged with those kept so far
            part = np.argpartition(d, keep - 1, axis=1)[:, :keep] if d.shape[1] > keep else \
                np.broadcast_to(np.arange(d.shape[1])[None, :], d.shape)
            cand_r = np.concatenate([top_r, part + start], axis=1)
            cand_d = np.concatenate([top_d, np.take_along_axis(d, part, 1)], axis=1)
            if cand_d.shape[1] > keep:
                part = np.argpartition(cand_d, keep - 1, axis=1)[:, :keep]
                cand_r, cand_d = np.take_along_axis(cand_r, part, 1), np.take_along_axis(cand_d, part, 1)
            top_r, top_d = cand_r, cand_d
    order = np.argsort(top_d, axis=1, kind="stable")
    return (np.concatenate(pair_r), np.concatenate(pair_s), np.concatenate(pair_d),
            np.take_along_axis(top_r, order, 1), np.sqrt(np.maximum(np.take_along_axis(top_d, order, 1), 0.0)))


def spread_verdicts(features: np.ndarray | StackedRows, reviewed: np.ndarray, classes: np.ndarray, negative_rows: np.ndarray,
                    spread: float, seed: int = 0, row_ids: np.ndarray | None = None,
                    neighbours: Path | None = None) -> Spread:
    """Soft labels for the unreviewed look-alikes of ``reviewed`` rows (verdict ``classes``).

    ``features``: the cohort's rows, a matrix or anything indexed like one
    (``wsireview.learn.data.StackedRows``), read in blocks whose distances to the verdicts hold
    ``BLOCK_ELEMENTS``, so memory does not grow with the cohort or the verdicts.
    ``negative_rows`` (bool over rows): patches of slides labelled negative, where a lesion
    verdict does not spread.
    ``neighbours``: a file remembering each verdict's nearest patches (:class:`Neighbours`) for
    these features, whose rows are the patches ``row_ids``: only verdicts new to it (and the rare
    one whose remembered neighbours all lie within the radius) are compared with every patch, so
    a round's time grows with its new verdicts, not with all verdicts times all patches. Without
    it every patch is compared with every verdict.
    """
    empty = Spread(0.0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if reviewed.size == 0 or spread <= 0:
        return empty
    radius = learn_radius(features, reviewed, classes, seed)
    if radius <= 0:
        return empty
    n = features.shape[0]
    src = np.asarray(features[reviewed], dtype=np.float32)
    keep = kept_neighbours(n) if neighbours is not None and row_ids is not None else 0
    if keep:
        assert neighbours is not None and row_ids is not None  # keep is 0 without them
        known = Neighbours.load(neighbours, keep)
        vids = row_ids[reviewed]
        entry = np.searchsorted(known.verdict_ids, vids) if known.verdict_ids.size else np.zeros(vids.size, np.int64)
        entry = np.minimum(entry, max(0, known.verdict_ids.size - 1))
        cached = (known.verdict_ids[entry] == vids) if known.verdict_ids.size else np.zeros(vids.size, bool)
        complete = cached & (known.dist[entry, -1] >= radius) if cached.any() else cached
        scan = np.flatnonzero(~complete)
    else:
        scan = np.arange(reviewed.size)
    if scan.size:
        pair_r, pair_s, pair_d, top_r, top_d = _scan(features, src[scan], radius, keep)
        pair_s = scan[pair_s]
    else:  # every verdict's look-alikes are remembered
        pair_r, pair_s, pair_d = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    if keep:
        assert neighbours is not None and row_ids is not None
        fresh = ~cached[scan]  # verdicts seen for the first time: remember their neighbours
        if fresh.any():
            new_ids = vids[scan[fresh]]
            merged_ids = np.concatenate([known.verdict_ids, new_ids])
            order = np.argsort(merged_ids, kind="stable")
            Neighbours(merged_ids[order], np.concatenate([known.ids, row_ids[top_r[fresh]]])[order],
                       np.concatenate([known.dist, top_d[fresh].astype(np.float32)])[order]).save(neighbours)
        use = np.flatnonzero(complete)
        if use.size:
            ids, dist = known.ids[entry[use]], known.dist[entry[use]]
            within = dist < radius
            found, rows = rows_of(row_ids, ids[within])
            pair_r = np.concatenate([pair_r, rows])
            pair_s = np.concatenate([pair_s, np.repeat(use, within.sum(1))[found]])
            pair_d = np.concatenate([pair_d, dist[within][found]])
    # Each row's nearest verdict within the radius; a lesion verdict does not reach a negative slide.
    ok = ~np.isin(pair_r, reviewed) & ~(negative_rows[pair_r] & (classes[pair_s] == LESION))
    pair_r, pair_s, pair_d = pair_r[ok], pair_s[ok], pair_d[ok]
    order = np.lexsort((pair_s, pair_d, pair_r))
    rows, first = np.unique(pair_r[order], return_index=True)
    nearest = order[first]
    return Spread(radius, rows, classes[pair_s[nearest]], spread * (1.0 - pair_d[nearest] / radius))


def rows_of(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``wanted`` ids occur in ``ids`` (bool per wanted) and their rows there."""
    if wanted.size == 0 or ids.size == 0:
        return np.zeros(wanted.size, bool), np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids, wanted, sorter=order), ids.size - 1)
    found = ids[order[pos]] == wanted
    return found, order[pos[found]]
