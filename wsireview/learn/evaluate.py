"""Simulated review rounds against known lesion regions: learning curves per query strategy.

Each strategy runs on its own throw-away copy of the catalog (slides, patches and feature sets
only, no reviews or models), in a temporary workspace that reads the real feature files: the
real catalog is never written. Round 0 trains on the slide labels alone; after each round an
oracle reviews the queue with the ground truth (reviewer ``oracle``) and the next round retrains.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from sqlalchemy import select

from wsireview.catalog import LESION, NOT_LESION, Catalog, FeatureSet, Patch, PatchScore, ReviewQueueItem, Slide, open_catalog
from wsireview.learn.metrics import roc_auc
from wsireview.learn.reviews import record_verdict
from wsireview.features.encoders import DEFAULT_ENCODER
from wsireview.learn.round import retrain
from wsireview.learn.spec import RoundSpec
from wsireview.learn.train import TrainParams
from wsireview.learn.truth import truth_labels
from wsireview.workspace import Workspace

ORACLE = "oracle"
CURVE_COLUMNS = ["strategy", "round", "verdicts", "lesion_found", "instance_auc", "slide_auc"]


@dataclass
class CurvePoint:
    strategy: str
    round: int
    verdicts: int  # verdicts the model of this round was trained with
    lesion_found: int  # lesion verdicts among them
    instance_auc: float | None  # instance probability against the truth, over all patches
    slide_auc: float | None  # cross-validated, from the round's model


@dataclass
class Evaluation:
    points: list[CurvePoint]
    out_dir: Path
    truth_lesion_patches: int
    patches: int


def copy_catalog(source: Catalog, source_ws: Workspace, target: Catalog) -> None:
    """Slides, patches and feature sets (with absolute feature paths) into an empty catalog."""
    with source.session() as session:
        slides = session.execute(select(Slide.__table__)).mappings().all()
        patches = session.execute(select(Patch.__table__)).mappings().all()
        sets = session.execute(select(FeatureSet.__table__)).mappings().all()
    sets = [{**row, "path": str(source_ws.absolute(row["path"]))} for row in sets]
    with target.session() as session:
        connection = session.connection()
        for table, rows in ((Slide.__table__, slides), (Patch.__table__, patches), (FeatureSet.__table__, sets)):
            if rows:
                connection.execute(table.insert(), [dict(r) for r in rows])


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
    with catalog.session() as session:
        rows = session.execute(
            select(PatchScore.patch_id, PatchScore.probability).where(PatchScore.model_version_id == version_id)
        ).all()
    y = np.array([truth.get(pid, False) for pid, _ in rows])
    return roc_auc(y, np.array([p for _, p in rows]))


def _queue(catalog: Catalog, version_id: int) -> list[int]:
    with catalog.session() as session:
        return list(session.scalars(
            select(ReviewQueueItem.patch_id).where(ReviewQueueItem.model_version_id == version_id)
            .order_by(ReviewQueueItem.rank)
        ))


def run_strategy(catalog: Catalog, workspace: Workspace, truth: dict[int, bool], strategy: str, rounds: int,
                 budget: int, encoder: str, seed: int, positive: str, console: Console,
                 params: TrainParams | None = None) -> list[CurvePoint]:
    points: list[CurvePoint] = []
    verdicts = found = 0
    with tempfile.TemporaryDirectory(prefix=f"wsireview-eval-{strategy}-") as tmp:
        ws = Workspace.resolve(Path(tmp) / "ws").ensure()
        copy = open_catalog(ws.db_url)
        try:
            copy_catalog(catalog, workspace, copy)
            for r in range(rounds + 1):
                spec = RoundSpec(encoder=encoder, positive=positive, budget=budget, strategy=strategy, seed=seed,
                                 train=dataclasses.replace(params) if params else TrainParams())
                result = retrain(copy, ws, spec)
                point = CurvePoint(strategy, r, verdicts, found,
                                   _instance_auc(copy, result.model_version_id, truth), result.metrics.get("slide_auc"))
                points.append(point)
                console.print(f"  {strategy} round {r}: {verdicts} verdicts, {found} lesion found, "
                              f"instance AUC {_fmt(point.instance_auc)}")
                if r == rounds:
                    break
                for patch_id in _queue(copy, result.model_version_id):
                    is_lesion = truth.get(patch_id, False)
                    record_verdict(copy, patch_id, LESION if is_lesion else NOT_LESION, ORACLE,
                                   model_version_id=result.model_version_id)
                    verdicts += 1
                    found += int(is_lesion)
        finally:
            copy.close()
    return points


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_curve(points: list[CurvePoint], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        for p in points:
            row = asdict(p)
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in CURVE_COLUMNS})


def plot_curve(points: list[CurvePoint], path: Path, total_lesion: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for strategy in dict.fromkeys(p.strategy for p in points):
        pts = [p for p in points if p.strategy == strategy]
        ax1.plot([p.verdicts for p in pts], [p.lesion_found for p in pts], marker="o", label=strategy)
        ax2.plot([p.verdicts for p in pts], [np.nan if p.instance_auc is None else p.instance_auc for p in pts],
                 marker="o", label=strategy)
    ax1.axhline(total_lesion, color="grey", linestyle=":", label="lesion patches in truth")
    ax1.set(xlabel="verdicts", ylabel="lesion patches found", title="Lesion patches found")
    ax2.set(xlabel="verdicts", ylabel="instance AUC (all patches vs truth)", title="Instance AUC")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


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
    console: Console | None = None,
    params: TrainParams | None = None,
) -> Evaluation:
    """Simulate ``rounds`` review rounds per strategy; write curve.csv and curve.png into ``out_dir``."""
    console = console or Console(stderr=True, quiet=True)
    truth = truth_labels(catalog, Path(truth_dir))
    if not truth:
        raise ValueError("the catalog has no patches of ready slides to evaluate on")
    out = Path(out_dir) if out_dir else new_out_dir(workspace)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("curve.csv", "curve.png"):
        if (out / name).exists():
            raise FileExistsError(f"{out / name} exists: choose another --out (results are never overwritten)")
    points: list[CurvePoint] = []
    for strategy in strategies:
        points.extend(run_strategy(catalog, workspace, truth, strategy, rounds, budget, encoder, seed, positive, console, params))
    total_lesion = int(sum(truth.values()))
    write_curve(points, out / "curve.csv")
    plot_curve(points, out / "curve.png", total_lesion)
    return Evaluation(points, out, total_lesion, len(truth))
