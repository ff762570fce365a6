"""Simulated review rounds against known lesion regions: learning curves per query strategy.

Each strategy and seed runs on its own throw-away copy of the catalog (slides, patches and
feature sets only, no reviews or models), in a temporary workspace that reads the real feature
files: the real catalog is never written. Round 0 trains on the slide labels alone; after each
round an oracle reviews the queue with the ground truth (reviewer ``oracle``) and the next round
retrains.

A **test split** of the labelled slides (stratified by class, drawn from the seed) is held out of
every round of that seed: in the copy its slides have no label, and each of their patches carries
an ``unsure`` verdict by reviewer ``held-out``, which is no training label and keeps the patch out
of every queue. The round still predicts them (as it predicts any unlabelled slide), so the slide
AUC on the test split is measured beside the cross-validated one, on slides no round learnt from.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import insert, select, update

from wsireview.catalog import (
    LESION,
    NOT_LESION,
    READY,
    UNSURE,
    Catalog,
    FeatureSet,
    Patch,
    Review,
    ReviewQueueItem,
    Slide,
    SlidePrediction,
    open_catalog,
)
from wsireview.catalog.score_files import version_scores
from wsireview.errors import WsireviewError
from wsireview.features.encoders import DEFAULT_ENCODER
from wsireview.learn.labels import instance_targets, slide_targets
from wsireview.learn.metrics import roc_auc
from wsireview.learn.reviews import record_verdict
from wsireview.learn.round import RoundResult, retrain
from wsireview.learn.spec import RoundSpec
from wsireview.learn.train import TrainParams
from wsireview.learn.truth import truth_labels
from wsireview.numbers import metric_text
from wsireview.workspace import Workspace

ORACLE = "oracle"
HELD_OUT = "held-out"
TEST_SHARE = 1 / 3  # of each class's labelled slides, when the class has enough (see split_test_slides)

class EvaluationError(WsireviewError):
    """An evaluation that cannot run or would overwrite results: nothing was trained or written."""


Report = Callable[[str], None]
"""Hears one line per finished round (the CLI prints it; tests and benchmarks may ignore it)."""


@dataclass
class CurvePoint:
    strategy: str
    seed: int
    round: int
    verdicts: int  # verdicts the model of this round was trained with
    lesion_found: int  # lesion verdicts among them
    instance_auc: float | None  # instance probability against the truth, over all patches
    slide_auc: float | None  # cross-validated over the training slides, from the round's model
    test_slide_auc: float | None  # the round's slide predictions on the held-out test split
    # The queue this round's model chose (what the next round learns from), by reason:
    queued: dict[str, int] = field(default_factory=dict)  # patches queued and reviewed
    lesion_queued: dict[str, int] = field(default_factory=dict)  # of which lesion


@dataclass
class Evaluation:
    points: list[CurvePoint]
    out_dir: Path
    truth_lesion_patches: int
    patches: int
    test_slides: dict[int, list[str]]  # seed -> names of the slides held out


@dataclass(frozen=True)
class Simulation:
    """What one simulated review loop runs with (the same for every strategy and seed)."""

    encoder: str = DEFAULT_ENCODER
    rounds: int = 3
    budget: int = 20
    positive: str = "lesion"
    test_share: float = TEST_SHARE
    params: TrainParams | None = None


def copy_catalog(source: Catalog, source_ws: Workspace, target: Catalog) -> None:
    """Slides, patches and feature sets (with absolute feature paths) into an empty catalog."""
    with source.session() as session:
        slides = session.execute(select(Slide.__table__)).mappings().all()
        patches = session.execute(select(Patch.__table__)).mappings().all()
        sets = session.execute(select(FeatureSet.__table__)).mappings().all()
    set_rows = [{**row, "path": str(source_ws.absolute(row["path"]))} for row in sets]
    with target.session() as session:
        connection = session.connection()
        for model, rows in ((Slide, slides), (Patch, patches), (FeatureSet, set_rows)):
            if rows:
                connection.execute(insert(model), [dict(r) for r in rows])


def split_test_slides(targets: dict[int, int], share: float, seed: int) -> set[int]:
    """Slide ids held out for testing: ``share`` of each class, drawn with ``seed``.

    A class gives at least one slide when ``share`` > 0, and always leaves two for training (what
    cross-validation needs), so a class of fewer than three slides gives none.
    """
    if share <= 0:
        return set()
    rng = np.random.default_rng([seed, 1009])
    held: set[int] = set()
    for cls in (1, 0):
        ids = sorted(sid for sid, t in targets.items() if t == cls)
        n = min(max(1, int(round(share * len(ids)))), len(ids) - 2)
        if n > 0:
            held.update(int(i) for i in rng.permutation(ids)[:n])
    return held


def hold_out(catalog: Catalog, slide_ids: set[int]) -> None:
    """Take ``slide_ids`` out of training in a throw-away catalog: no label, and every patch an
    ``unsure`` verdict (no instance label, never queued). The round still predicts the slides."""
    if not slide_ids:
        return
    with catalog.session() as session:
        session.execute(update(Slide).where(Slide.id.in_(slide_ids)).values(label=None))
        patches = session.scalars(select(Patch.id).where(Patch.slide_id.in_(slide_ids))).all()
        now = datetime.now(timezone.utc)
        session.connection().execute(insert(Review), [
            {"patch_id": int(p), "verdict": UNSURE, "reviewer": HELD_OUT, "created_at": now} for p in patches
        ])


def new_out_dir(workspace: Workspace) -> Path:
    """A fresh folder under ``<workspace>/evaluations`` (never an existing one)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = workspace.dir("evaluations")
    n = 0
    while True:
        path = base / (f"eval-{stamp}" if n == 0 else f"eval-{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def _instance_auc(catalog: Catalog, version_id: int, truth: dict[int, bool]) -> float | None:
    scores = version_scores(catalog, version_id)
    if scores is None:
        return None
    y = np.array([truth.get(pid, False) for pid in scores.column("patch_id").tolist()])
    return roc_auc(y, scores.column("probability").astype(np.float64))


def _test_slide_auc(catalog: Catalog, version_id: int, truth: dict[int, int]) -> float | None:
    """AUC of the version's slide predictions on the held-out slides (``truth``: their real targets)."""
    if not truth:
        return None
    with catalog.session() as session:
        rows = session.execute(
            select(SlidePrediction.slide_id, SlidePrediction.probability)
            .where(SlidePrediction.model_version_id == version_id, SlidePrediction.slide_id.in_(list(truth)))
        ).all()
    return roc_auc(np.array([truth[sid] for sid, _ in rows]), np.array([p for _, p in rows]))


def _queue(catalog: Catalog, version_id: int) -> list[tuple[int, str]]:
    with catalog.session() as session:
        return [(patch_id, reason) for patch_id, reason in session.execute(
            select(ReviewQueueItem.patch_id, ReviewQueueItem.reason)
            .where(ReviewQueueItem.model_version_id == version_id).order_by(ReviewQueueItem.rank)
        )]


def _round(catalog: Catalog, workspace: Workspace, sim: Simulation, strategy: str, seed: int) -> RoundResult:
    """One training round: the single place evaluate calls into the learning core."""
    spec = RoundSpec(encoder=sim.encoder, positive=sim.positive, budget=sim.budget, strategy=strategy, seed=seed,
                     train=dataclasses.replace(sim.params) if sim.params else TrainParams())
    return retrain(catalog, workspace, spec)


def check_never_trained_on(catalog: Catalog, sim: Simulation, held: set[int]) -> None:
    """What the round reads for training holds no label of a held-out slide and no verdict on its patches."""
    targets, _ = slide_targets(catalog, sim.positive)
    inst = instance_targets(catalog)
    with catalog.session() as session:
        held_patches = set(session.scalars(select(Patch.id).where(Patch.slide_id.in_(held))))
    leaked = (held & set(targets)) | (held_patches & set(inst))
    if leaked:
        raise RuntimeError(f"held-out test slides reached training: {sorted(leaked)[:5]}")


def run_strategy(catalog: Catalog, workspace: Workspace, truth: dict[int, bool], strategy: str, seed: int,
                 sim: Simulation, report: Report | None = None) -> list[CurvePoint]:
    """``sim.rounds`` review rounds (and round 0) of ``strategy`` with ``seed`` on a copy of the catalog."""
    points: list[CurvePoint] = []
    verdicts = found = 0
    targets, _ = slide_targets(catalog, sim.positive)
    held = split_test_slides(targets, sim.test_share, seed)
    held_truth = {sid: targets[sid] for sid in held}
    with tempfile.TemporaryDirectory(prefix=f"wsireview-eval-{strategy}-") as tmp:
        ws = Workspace.resolve(Path(tmp) / "ws").ensure()
        copy = open_catalog(ws.db_url)
        try:
            copy_catalog(catalog, workspace, copy)
            hold_out(copy, held)
            for r in range(sim.rounds + 1):
                check_never_trained_on(copy, sim, held)
                result = _round(copy, ws, sim, strategy, seed)
                vid = result.model_version_id
                point = CurvePoint(strategy, seed, r, verdicts, found, _instance_auc(copy, vid, truth),
                                   result.metrics.get("slide_auc"), _test_slide_auc(copy, vid, held_truth))
                points.append(point)
                if r < sim.rounds:
                    queued: Counter[str] = Counter()
                    lesion: Counter[str] = Counter()
                    for patch_id, reason in _queue(copy, vid):
                        is_lesion = truth.get(patch_id, False)
                        record_verdict(copy, patch_id, LESION if is_lesion else NOT_LESION, ORACLE, model_version_id=vid)
                        queued[reason] += 1
                        lesion[reason] += int(is_lesion)
                        verdicts += 1
                        found += int(is_lesion)
                    point.queued, point.lesion_queued = dict(queued), {k: lesion[k] for k in queued}
                if report:
                    report(f"{strategy} seed {seed} round {r}: {point.verdicts} verdicts, {point.lesion_found} lesion "
                           f"found, instance AUC {metric_text(point.instance_auc)}, slide AUC test {metric_text(point.test_slide_auc)} "
                           f"CV {metric_text(point.slide_auc)}")
        finally:
            copy.close()
    return points


def evaluate(
    catalog: Catalog,
    workspace: Workspace,
    truth_dir: Path,
    rounds: int = 3,
    budget: int = 20,
    strategies: tuple[str, ...] = ("mix", "random"),
    out_dir: Path | None = None,
    encoder: str = DEFAULT_ENCODER,
    seed: int = 0,
    positive: str = "lesion",
    params: TrainParams | None = None,
    seeds: tuple[int, ...] | None = None,
    test_share: float = TEST_SHARE,
    report: Report | None = None,
) -> Evaluation:
    """Simulate ``rounds`` review rounds per strategy and seed (``seeds``, else ``seed``); write
    curve.csv, yield.csv, summary.csv and curve.png into ``out_dir``."""
    from wsireview.learn.curves import OUTPUTS, write_outputs

    truth = truth_labels(catalog, Path(truth_dir))
    if not truth:
        raise EvaluationError("the catalog has no patches of ready slides to evaluate on")
    out = Path(out_dir) if out_dir else new_out_dir(workspace)
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        if (out / name).exists():
            raise EvaluationError(f"{out / name} exists: choose another --out (results are never overwritten)")
    sim = Simulation(encoder=encoder, rounds=rounds, budget=budget, positive=positive, test_share=test_share,
                     params=params)
    seeds = tuple(seeds) if seeds else (seed,)
    points: list[CurvePoint] = []
    targets, _ = slide_targets(catalog, positive)
    with catalog.session() as session:
        names = dict(session.execute(select(Slide.id, Slide.name).where(Slide.status == READY)).all())
    test_slides = {s: sorted(names[i] for i in split_test_slides(targets, test_share, s)) for s in seeds}
    for s in seeds:
        for strategy in strategies:
            points.extend(run_strategy(catalog, workspace, truth, strategy, s, sim, report))
    total_lesion = int(sum(truth.values()))
    write_outputs(points, out, total_lesion)
    return Evaluation(points, out, total_lesion, len(truth), test_slides)
