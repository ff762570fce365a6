"""Spreading verdicts to look-alike patches: nearest neighbours in feature space, within a radius
learned from the verdicts themselves.

A verdict on one patch says something about the patches that look like it: a dust speck marked
``artifact`` has twins elsewhere, a rejected mimic has neighbours that are mimics too. Each
verdict gives its unreviewed neighbours within the radius a soft label: the same class with a
weight falling from ``spread`` at distance 0 to 0 at the radius (the nearest verdict wins). A
lesion verdict never spreads into a slide labelled negative (its patches are known not lesion).

The radius: candidate radii are distances between reviewed patches, capped at the median
distance from a reviewed patch to its ``NEIGHBOURS``-th nearest patch of the cohort (a verdict
reaches a handful of look-alikes, never a whole slide, however large the cohort). The radius is
the largest candidate within which reviewed pairs still agree (``PURITY`` of the pairs of
reviewed patches closer than it share their verdict); when no two verdicts of different classes
are that close, the cap.

Every verdict's ``KEPT_NEIGHBOURS`` nearest patches are found exactly, in one blocked pass over
the cohort that keeps, per verdict, only the rows closer than its current ``KEPT_NEIGHBOURS``-th
(a few hundred candidates per verdict over millions of rows), and remembered between rounds
(:class:`Neighbours`): a round compares only its new verdicts with every patch. A verdict whose
remembered neighbours all lie within the radius (a dense clump: a dust speck's hundred twins) is
compared with every patch again to find the rest.
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
KEPT_NEIGHBOURS = 32  # nearest rows found and remembered per verdict (the radius reaches about NEIGHBOURS)
CAP_PROBES = 500  # verdicts whose NEIGHBOURS-th nearest distance sets the radius's cap (their median)
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


def radius_cap(nearest_dist: np.ndarray) -> float:
    """The radius's cap from verdicts' sorted nearest distances ``(R, M)`` (column 0: the patch itself):
    the median distance to the ``NEIGHBOURS``-th nearest other patch, over the first ``CAP_PROBES``."""
    column = min(NEIGHBOURS, nearest_dist.shape[1] - 1)
    return float(np.median(nearest_dist[:CAP_PROBES, column])) if column >= 1 else 0.0


def learn_radius(points: np.ndarray, classes: np.ndarray, cap: float) -> float:
    """The look-alike radius for reviewed ``points`` (their features) with verdict ``classes``.

    Only pairs of reviewed patches closer than the cap can decide it, so only those are kept: the
    pairs are found in blocks, and thousands of verdicts never make a matrix of all their pairs.
    """
    if points.shape[0] < 2 or cap <= 0:
        return cap
    i, j, pair_d = _close_pairs(points, cap)
    if pair_d.size == 0:
        return cap
    same = classes[i] == classes[j]
    order = np.lexsort((j, i, pair_d))  # by distance; ties in the order of the pairs (row-major)
    pair_d, same = pair_d[order], same[order]
    if same.all():
        return cap
    purity = np.cumsum(same) / np.arange(1, same.size + 1)
    ok = np.flatnonzero(purity >= PURITY)
    return float(pair_d[ok[-1]]) if ok.size else float(pair_d[0]) * 0.5


@dataclass
class Neighbours:
    """Each verdict's ``KEPT_NEIGHBOURS`` nearest patches of the cohort under one projection:
    computed once per verdict, so a round compares only its new verdicts with every patch."""

    verdict_ids: np.ndarray  # (R,) patch ids of the reviewed patches, sorted
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


def _keep_nearest(top_r: np.ndarray, top_d: np.ndarray, src: np.ndarray, rows: np.ndarray,
                  dist: np.ndarray) -> None:
    """Update each source's kept nearest rows ``top_r`` / distances ``top_d`` (in place) with the
    candidates ``(src, rows, dist)``; only the sources with candidates are touched."""
    keep = top_r.shape[1]
    touched, local = np.unique(src, return_inverse=True)
    all_s = np.concatenate([np.repeat(np.arange(touched.size), keep), local])
    all_r = np.concatenate([top_r[touched].ravel(), rows])
    all_d = np.concatenate([top_d[touched].ravel(), dist])
    order = np.lexsort((all_r, all_d, all_s))  # by source, then distance; ties: the lower row first
    first = np.searchsorted(all_s[order], np.arange(touched.size))
    take = order[first[:, None] + np.arange(keep)[None, :]]
    top_r[touched], top_d[touched] = all_r[take], all_d[take]


def _scan(features: np.ndarray | StackedRows, sources: np.ndarray, radius: float, keep: int) -> tuple[np.ndarray, ...]:
    """One blocked pass over every row against ``sources``: the (row, source, distance) pairs
    closer than ``radius`` (none when 0) and each source's ``keep`` nearest rows, nearest first
    ((S, keep) rows and distances; ``keep`` 0: none).

    A row is looked at again only when it is closer to a source than that source's ``keep``-th
    nearest so far (or within the radius): after the first block that is a few rows in
    thousands, so the pass costs about its matrix multiplies."""
    w = np.hstack([-2.0 * sources, np.square(sources).sum(1)[:, None]]).astype(np.float32)  # (S, K + 1)
    n, s_count = features.shape[0], sources.shape[0]
    keep = min(keep, n)
    top_r = np.zeros((s_count, keep), np.int64)
    top_d = np.full((s_count, keep), np.inf, np.float32)
    r2 = np.float32(radius * radius) if radius > 0 else np.float32(-1.0)
    pair_r, pair_s, pair_d = [], [], []
    step = max(_block_rows(s_count), keep)
    for start in range(0, n, step):
        x = np.asarray(features[start : start + step], dtype=np.float32)
        x1 = np.empty((x.shape[1] + 1, x.shape[0]), np.float32)
        x1[:-1], x1[-1] = x.T, 1.0
        d = w @ x1  # (S, block) squared distances once |x|^2 is added; square roots only for pairs kept
        d += np.square(x).sum(1)[None, :]
        if keep and start == 0:  # the first block (at least `keep` rows) fills every source's list
            part = np.argpartition(d, keep - 1, axis=1)[:, :keep] if d.shape[1] > keep else \
                np.broadcast_to(np.arange(keep)[None, :], (s_count, keep))
            top_d[:] = np.take_along_axis(d, part, 1)
            top_r[:] = part
        limit = np.maximum(top_d[:, -1], r2) if keep else np.full(s_count, r2)
        flat = np.flatnonzero(d < limit[:, None])
        if flat.size == 0:
            continue
        c, r = np.divmod(flat, d.shape[1])
        cd = d.ravel()[flat]
        close = cd < r2
        pair_r.append(r[close] + start)
        pair_s.append(c[close])
        pair_d.append(np.sqrt(np.maximum(cd[close], 0.0)))
        if keep and start > 0:  # (the first block's rows are in the lists already)
            better = cd < top_d[c, -1]
            if better.any():
                _keep_nearest(top_r, top_d, c[better], r[better] + start, cd[better])
    if keep:  # nearest first
        order = np.argsort(top_d, axis=1, kind="stable")
        top_r, top_d = np.take_along_axis(top_r, order, 1), np.take_along_axis(top_d, order, 1)
    empty_i = np.zeros(0, np.int64)
    return (np.concatenate(pair_r) if pair_r else empty_i, np.concatenate(pair_s) if pair_s else empty_i,
            np.concatenate(pair_d) if pair_d else np.zeros(0, np.float32),
            top_r, np.sqrt(np.maximum(top_d, 0.0)))


def spread_verdicts(features: np.ndarray | StackedRows, reviewed: np.ndarray, classes: np.ndarray, negative_rows: np.ndarray,
                    spread: float, row_ids: np.ndarray | None = None, neighbours: Path | None = None) -> Spread:
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
    it every verdict is compared with every patch; the look-alikes are the same.
    """
    empty = Spread(0.0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if reviewed.size == 0 or spread <= 0:
        return empty
    n = features.shape[0]
    keep = min(KEPT_NEIGHBOURS, n)
    remember = neighbours is not None and row_ids is not None
    ids = row_ids if row_ids is not None else np.arange(n, dtype=np.int64)
    vids = ids[reviewed]
    known = Neighbours.load(neighbours, keep) if remember and neighbours is not None else Neighbours.empty(keep)
    entry = np.minimum(np.searchsorted(known.verdict_ids, vids), max(0, known.verdict_ids.size - 1))
    cached = known.verdict_ids[entry] == vids if known.verdict_ids.size else np.zeros(vids.size, bool)
    near_rows = np.zeros((reviewed.size, keep), np.int64)
    near_dist = np.zeros((reviewed.size, keep), np.float32)
    old = np.flatnonzero(cached)
    if old.size:  # remembered rows of patches the cohort still holds (a slide may have left it)
        found, rows = rows_of(ids, known.ids[entry[old]].ravel())
        whole = found.reshape(old.size, keep).all(1)
        near_rows[old[whole]] = _rows_where(found, rows, old.size, keep)[whole]
        near_dist[old[whole]] = known.dist[entry[old[whole]]]
        cached[old[~whole]] = False
    src = np.asarray(features[reviewed], dtype=np.float32)
    fresh = np.flatnonzero(~cached)
    if fresh.size:  # every patch compared with the verdicts seen for the first time
        _, _, _, near_rows[fresh], near_dist[fresh] = _scan(features, src[fresh], 0.0, keep)
        if remember:
            assert neighbours is not None
            stay = np.isin(known.verdict_ids, vids[fresh], invert=True)
            merged = np.concatenate([known.verdict_ids[stay], vids[fresh]])
            order = np.argsort(merged, kind="stable")
            Neighbours(merged[order], np.concatenate([known.ids[stay], ids[near_rows[fresh]]])[order],
                       np.concatenate([known.dist[stay], near_dist[fresh]])[order]).save(neighbours)

    radius = learn_radius(src, classes, radius_cap(near_dist))
    if radius <= 0:
        return empty
    # Look-alikes: the remembered rows within the radius; a verdict whose every remembered row is
    # within it (a dense clump) is compared with every patch again to find the rest.
    within = near_dist < radius
    dense = np.flatnonzero(within[:, -1]) if keep < n else np.zeros(0, np.int64)
    within[dense] = False
    pair_r, pair_s, pair_d = near_rows[within], np.nonzero(within)[0], near_dist[within]
    if dense.size:
        more_r, more_s, more_d, _, _ = _scan(features, src[dense], radius, 0)
        pair_r = np.concatenate([pair_r, more_r])
        pair_s = np.concatenate([pair_s, dense[more_s]])
        pair_d = np.concatenate([pair_d, more_d])
    # Each row's nearest verdict within the radius; a lesion verdict does not reach a negative slide.
    ok = ~np.isin(pair_r, reviewed) & ~(negative_rows[pair_r] & (classes[pair_s] == LESION))
    pair_r, pair_s, pair_d = pair_r[ok], pair_s[ok], pair_d[ok]
    order = np.lexsort((pair_s, pair_d, pair_r))
    rows, first = np.unique(pair_r[order], return_index=True)
    nearest = order[first]
    return Spread(radius, rows, classes[pair_s[nearest]], spread * (1.0 - pair_d[nearest] / radius))


def _rows_where(found: np.ndarray, rows: np.ndarray, count: int, keep: int) -> np.ndarray:
    """``(count, keep)`` rows from :func:`rows_of` over ``count * keep`` ids (-1 where not found)."""
    out = np.full(count * keep, -1, np.int64)
    out[found] = rows
    return out.reshape(count, keep)


def rows_of(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``wanted`` ids occur in ``ids`` (bool per wanted) and their rows there."""
    if wanted.size == 0 or ids.size == 0:
        return np.zeros(wanted.size, bool), np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids, wanted, sorter=order), ids.size - 1)
    found = ids[order[pos]] == wanted
    return found, order[pos[found]]
