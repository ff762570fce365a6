"""Choosing what the pathologist sees next (active-learning query strategies).

- ``attention``: the top-attention patches of the slides predicted positive, taken round-robin
  over those slides (most probable slide first) so one slide cannot fill the queue.
- ``uncertainty``: the most uncertain instances (the CV fold models' disagreement, see
  ``wsireview.learn.scoring``).
- ``random``: uniform over never-reviewed patches (the baseline).
- ``mix`` (default): 30% exploit (the unreviewed patches with the highest P(lesion): the model's
  best guesses are always shown), 30% top-attention, 20% uncertain and 20% diverse. Uncertain
  picks are weighted by their distance in feature space to what is already chosen
  (k-means++-like), and the diverse share is k-center greedy over the suspicious patches (upper
  fifth by instance probability), starting from everything chosen or reviewed, so the queue
  covers the different-looking candidates instead of 50 neighbours of one spot.

A round may send a share of its queue to two reviewers (``double_read``): which items is a seeded
choice (:func:`double_read_picks`), recorded as ``reads = 2`` on the queue item.

Bounded whatever the cohort and the verdicts: the diverse pool is at most ``POOL_MAX`` patches (a
seeded sample of the suspicious fifth when that is larger), the centres it keeps away from at most
``CENTRES_MAX`` (every chosen and reviewed patch first, then a seeded sample of the rest), each
pool's features are gathered once, and distances are computed in blocks of ``BLOCK_ELEMENTS``.

Only patches never reviewed are queued; every entry records why it was chosen. ``mix`` skips
the slides labelled negative while other patches are left: by their label none of their patches
is lesion, so a verdict there tells the model what it knows already (and the model's false
alarms there, lesion mimics, taught the instance head to distrust lesion-like patches before any
lesion was found: instance AUC fell after the first queue). A mimic on a positive or unlabelled
slide is still queued, and its rejection teaches what tells the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsireview.learn.data import StackedRows
from wsireview.learn.scoring import PatchScores

STRATEGIES = ("mix", "attention", "uncertainty", "random")
EXPLOIT, TOP_ATTENTION, UNCERTAIN, DIVERSE, RANDOM = "exploit", "top-attention", "uncertain", "diverse", "random"
SECOND_READ = "second-read"  # a double read the previous queue left half done, queued again first
REASONS = (EXPLOIT, TOP_ATTENTION, UNCERTAIN, DIVERSE, RANDOM)
MIX_SHARES = {EXPLOIT: 0.3, TOP_ATTENTION: 0.3, UNCERTAIN: 0.2}  # the rest is diverse


@dataclass
class QueuePick:
    """A patch the round queues for review: why it was chosen and the score it was chosen by."""

    patch_id: int
    reason: str
    score: float


POOL_MAX = 10_000  # candidates for the diverse picks (k-center greedy over them)
CENTRES_MAX = 10_000  # patches the diverse picks keep away from
BLOCK_ELEMENTS = 1 << 22  # distances computed at a time (16 MB of float32)


def _min_sq_dist(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared distance of every point to its nearest centre (inf without centres), in blocks of
    about ``BLOCK_ELEMENTS`` distances."""
    out = np.full(points.shape[0], np.inf)
    if centres.shape[0] == 0 or points.shape[0] == 0:
        return out
    p_sq = np.square(points).sum(1)
    c_sq = np.square(centres).sum(1)
    cols = int(np.clip(BLOCK_ELEMENTS // max(1, points.shape[0]), 256, 4096))
    rows = max(1, BLOCK_ELEMENTS // cols)
    for c0 in range(0, centres.shape[0], cols):
        c = centres[c0 : c0 + cols]
        for r0 in range(0, points.shape[0], rows):
            d = points[r0 : r0 + rows] @ c.T
            d *= -2.0
            d += p_sq[r0 : r0 + rows, None]
            d += c_sq[None, c0 : c0 + cols]
            out[r0 : r0 + rows] = np.minimum(out[r0 : r0 + rows], np.maximum(d.min(1), 0.0))
    return out


def _sq_dist_to(points: np.ndarray, one: np.ndarray) -> np.ndarray:
    return np.square(points - one[None, :]).sum(1)


def top_attention(scores: PatchScores, eligible: np.ndarray, slide_probability: dict[int, float], n: int) -> list[int]:
    """Indices of the top-attention eligible patches of positive-predicted slides, round-robin."""
    if n <= 0:
        return []
    ranked = sorted(slide_probability, key=lambda s: (-slide_probability[s], s))
    positive = [s for s in ranked if slide_probability[s] >= 0.5] or ranked[:1]
    # One pass over the patches: eligible ones of those slides, by slide then attention rank.
    idx = np.flatnonzero(eligible & np.isin(scores.slide_ids, positive))
    idx = idx[np.lexsort((idx, scores.attention_rank[idx], scores.slide_ids[idx]))]
    sids = scores.slide_ids[idx]
    bounds = np.searchsorted(sids, positive, side="left"), np.searchsorted(sids, positive, side="right")
    per_slide = [idx[a:b][: n] for a, b in zip(*bounds)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(p) for p in per_slide):
        for p in per_slide:
            if depth < len(p) and len(picked) < n:
                picked.append(int(p[depth]))
        depth += 1
    return picked


def uncertain_spread(scores: PatchScores, features: np.ndarray | StackedRows, eligible: np.ndarray, chosen: list[int], n: int) -> list[int]:
    """Uncertain patches, each pick weighted by its distance to what is already chosen."""
    if n <= 0:
        return []
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return []
    pool = idx[np.argsort(-scores.uncertainty[idx], kind="stable")[: max(5 * n, n)]]
    pool_x = features[pool]
    d = _min_sq_dist(pool_x, features[chosen]) if chosen else np.full(pool.size, np.inf)
    scale = np.median(d[np.isfinite(d)]) if np.isfinite(d).any() else 1.0
    picked: list[int] = []
    taken = np.zeros(pool.size, bool)
    for _ in range(min(n, pool.size)):
        spread = np.where(np.isfinite(d), np.minimum(d / max(scale, 1e-12), 1.0), 1.0)
        value = np.where(taken, -1.0, scores.uncertainty[pool] * spread)
        j = int(np.argmax(value))
        taken[j] = True
        picked.append(int(pool[j]))
        d = np.minimum(d, _sq_dist_to(pool_x, pool_x[j]))
    return picked


def diverse(scores: PatchScores, features: np.ndarray | StackedRows, eligible: np.ndarray, centres: list[int], n: int,
            seed: int = 0) -> list[int]:
    """k-center greedy over the suspicious eligible patches (upper fifth by instance probability;
    a seeded sample of ``POOL_MAX`` of them when there are more)."""
    if n <= 0:
        return []
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return []
    k = max(10 * n, idx.size // 5)
    pool = idx[np.argsort(-scores.probability[idx], kind="stable")[:k]]
    if pool.size > max(POOL_MAX, 10 * n):
        rng = np.random.default_rng([seed, 37])
        keep = np.sort(rng.choice(pool.size, size=max(POOL_MAX, 10 * n), replace=False))
        pool = pool[keep]  # still most probable first
    pool_x = features[pool]
    d = _min_sq_dist(pool_x, features[centres]) if centres else np.full(pool.size, np.inf)
    picked: list[int] = []
    for _ in range(min(n, pool.size)):
        j = 0 if np.isinf(d).all() else int(np.argmax(d))  # no centre yet: the most probable patch
        picked.append(int(pool[j]))
        d = np.minimum(d, _sq_dist_to(pool_x, pool_x[j]))
        d[j] = -1.0
    return picked


DOUBLE_READS = 2  # reviewers who judge a double-read item


def double_read_picks(queued: int, share: float, seed: int) -> set[int]:
    """Which of ``queued`` items (0-based positions) go to a second reviewer: ``share`` of them (rounded
    half up), drawn from ``seed``, spread over the whole queue rather than its head."""
    n = min(queued, int(np.floor(share * queued + 0.5)))
    if n <= 0:
        return set()
    rng = np.random.default_rng([seed, 47])
    return {int(i) for i in rng.choice(queued, size=n, replace=False)}


def _centres(eligible: np.ndarray, first: np.ndarray, seed: int) -> list[int]:
    """What the diverse picks keep away from: the patches no longer eligible, ``first`` (chosen and
    reviewed) always, the rest (left out by a rule) sampled to at most ``CENTRES_MAX`` in all."""
    taken = ~eligible
    if int(taken.sum()) <= CENTRES_MAX:
        return np.flatnonzero(taken).tolist()
    must = np.zeros(taken.size, bool)
    must[first] = True
    must &= taken
    rest = np.flatnonzero(taken & ~must)
    room = max(0, CENTRES_MAX - int(must.sum()))
    rng = np.random.default_rng([seed, 43])
    must[rest[rng.choice(rest.size, size=min(room, rest.size), replace=False)]] = True
    return np.flatnonzero(must).tolist()


def build_queue(
    scores: PatchScores,
    features: np.ndarray | StackedRows,
    slide_probability: dict[int, float],
    reviewed: set[int],
    budget: int,
    strategy: str = "mix",
    seed: int = 0,
    negative_slides: set[int] | None = None,
    set_aside: set[int] | None = None,
) -> list[QueuePick]:
    """``budget`` never-reviewed patches chosen by ``strategy``, in the order to show them.

    ``features``: the patches' features, rows in the order of ``scores`` (a matrix or
    ``StackedRows``; only the rows a strategy looks at are gathered).

    ``negative_slides``: slides labelled negative, which ``mix`` leaves out while it can.
    ``set_aside``: patches ``mix`` also leaves out while it can: the look-alikes of rejected
    patches whose verdicts the model has not been taught yet (``wsireview.learn.round.rejections_wait``),
    which it would otherwise queue again and again.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    not_reviewed = ~np.isin(scores.patch_ids, np.fromiter(reviewed, dtype=np.int64, count=len(reviewed)))
    eligible = not_reviewed.copy()
    budget = min(budget, int(eligible.sum()))
    known_negative = np.isin(scores.slide_ids, list(negative_slides or ()))
    if strategy == "mix" and int((eligible & ~known_negative).sum()) >= budget:
        eligible &= ~known_negative
    aside = np.isin(scores.patch_ids, np.fromiter(set_aside or (), dtype=np.int64))
    if strategy == "mix" and aside.any() and int((eligible & ~aside).sum()) >= budget:
        eligible &= ~aside
    entries: list[QueuePick] = []

    def take(indices: list[int], reason: str, values: np.ndarray) -> None:
        for i in indices:
            entries.append(QueuePick(int(scores.patch_ids[i]), reason, float(values[i])))
            eligible[i] = False

    if strategy == "random":
        rng = np.random.default_rng([seed, 31])
        idx = np.flatnonzero(eligible)
        take(list(rng.choice(idx, size=budget, replace=False)), RANDOM, np.zeros(len(scores)))
        return entries
    if strategy == "attention":
        take(top_attention(scores, eligible, slide_probability, budget), TOP_ATTENTION, scores.attention)
    elif strategy == "uncertainty":
        idx = np.flatnonzero(eligible)
        take(list(idx[np.argsort(-scores.uncertainty[idx], kind="stable")[:budget]]), UNCERTAIN, scores.uncertainty)
    else:
        n_exp = int(round(MIX_SHARES[EXPLOIT] * budget))
        n_att = int(round(MIX_SHARES[TOP_ATTENTION] * budget))
        n_unc = int(round(MIX_SHARES[UNCERTAIN] * budget))
        idx = np.flatnonzero(eligible)
        take(list(idx[np.argsort(-scores.probability[idx], kind="stable")[:n_exp]]), EXPLOIT, scores.probability)
        take(top_attention(scores, eligible, slide_probability, n_att), TOP_ATTENTION, scores.attention)
        chosen = [int(i) for i in np.flatnonzero(np.isin(scores.patch_ids, [e.patch_id for e in entries]))]
        take(uncertain_spread(scores, features, eligible, chosen, n_unc), UNCERTAIN, scores.uncertainty)
        first = np.concatenate([np.flatnonzero(~not_reviewed), np.flatnonzero(np.isin(
            scores.patch_ids, [e.patch_id for e in entries]))])
        centres = _centres(eligible, first, seed)  # chosen and reviewed patches (and those left out)
        take(diverse(scores, features, eligible, centres, budget - len(entries), seed), DIVERSE, scores.probability)
    if len(entries) < budget:  # a pool ran dry: fill with the most probable patches left
        idx = np.flatnonzero(eligible)
        take(list(idx[np.argsort(-scores.probability[idx], kind="stable")[: budget - len(entries)]]), DIVERSE, scores.probability)
    return entries
