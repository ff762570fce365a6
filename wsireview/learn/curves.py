"""Learning curves of an evaluation: per-seed points, their mean and spread, the queue's yield, the plot.

Files written (never over an existing one; :func:`wsireview.learn.evaluate.evaluate` checks):

- ``curve.csv``: one row per strategy, seed and round (CURVE_COLUMNS);
- ``summary.csv``: one row per strategy and round, mean and standard deviation over the seeds;
- ``yield.csv``: per strategy, seed, round and queue reason, patches queued and how many were lesion;
- ``curve.png``: lesion patches found, instance AUC and slide AUC (test split and cross-validated)
  against verdicts, the mean over seeds with a band of one standard deviation.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsireview.learn.evaluate import CurvePoint

CURVE_COLUMNS = ["strategy", "seed", "round", "verdicts", "lesion_found", "instance_auc", "slide_auc", "test_slide_auc"]
METRICS = ("lesion_found", "instance_auc", "slide_auc", "test_slide_auc")
OUTPUTS = ("curve.csv", "summary.csv", "yield.csv", "curve.png")


@dataclass
class Spread:
    """Mean and standard deviation (0 for one value) over the seeds that have a value."""

    mean: float | None
    sd: float | None
    n: int

    def format(self, digits: int = 3) -> str:
        if self.mean is None:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f}"


def spread(values: list[float | None]) -> Spread:
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return Spread(None, None, 0)
    return Spread(float(np.mean(kept)), float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0, len(kept))


@dataclass
class SummaryRow:
    strategy: str
    round: int
    verdicts: int
    seeds: int
    metrics: dict[str, Spread]


def summarise(points: list[CurvePoint]) -> list[SummaryRow]:
    """Mean and spread over seeds of every metric, per strategy and round (strategies in first-seen order)."""
    rows = []
    for strategy in dict.fromkeys(p.strategy for p in points):
        for r in sorted({p.round for p in points if p.strategy == strategy}):
            pts = [p for p in points if p.strategy == strategy and p.round == r]
            rows.append(SummaryRow(strategy, r, pts[0].verdicts, len(pts),
                                   {m: spread([getattr(p, m) for p in pts]) for m in METRICS}))
    return rows


def queue_yield(points: list[CurvePoint]) -> dict[str, dict[str, tuple[int, int]]]:
    """``{strategy: {reason: (queued, lesion)}}`` summed over rounds and seeds."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for p in points:
        per = out.setdefault(p.strategy, {})
        for reason, n in p.queued.items():
            q, l = per.get(reason, (0, 0))
            per[reason] = (q + n, l + p.lesion_queued.get(reason, 0))
    return out


def write_outputs(points: list[CurvePoint], out: Path, total_lesion: int) -> None:
    write_curve(points, out / "curve.csv")
    write_summary(summarise(points), out / "summary.csv")
    write_yield(points, out / "yield.csv")
    plot_curve(points, out / "curve.png", total_lesion)


def _cell(value) -> str:
    return "" if value is None else str(value)


def write_curve(points: list[CurvePoint], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CURVE_COLUMNS)
        for p in points:
            writer.writerow([_cell(getattr(p, c)) for c in CURVE_COLUMNS])


def write_summary(rows: list[SummaryRow], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "round", "verdicts", "seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "sd")])
        for row in rows:
            writer.writerow([row.strategy, row.round, row.verdicts, row.seeds]
                            + [_cell(getattr(row.metrics[m], s)) for m in METRICS for s in ("mean", "sd")])


def write_yield(points: list[CurvePoint], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "seed", "round", "reason", "queued", "lesion"])
        for p in points:
            for reason, n in p.queued.items():
                writer.writerow([p.strategy, p.seed, p.round, reason, n, p.lesion_queued.get(reason, 0)])


def plot_curve(points: list[CurvePoint], path: Path, total_lesion: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarise(points)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.2))
    for k, strategy in enumerate(dict.fromkeys(r.strategy for r in rows)):
        colour = f"C{k}"
        pts = [r for r in rows if r.strategy == strategy]
        x = [r.verdicts for r in pts]

        def draw(ax, metric: str, label: str, style: str = "-") -> None:
            mean = np.array([np.nan if r.metrics[metric].mean is None else r.metrics[metric].mean for r in pts])
            sd = np.array([np.nan if r.metrics[metric].sd is None else r.metrics[metric].sd for r in pts])
            ax.plot(x, mean, style, marker="o", color=colour, label=label)
            if any(r.seeds > 1 for r in pts):
                ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.15)

        draw(ax1, "lesion_found", strategy)
        draw(ax2, "instance_auc", strategy)
        draw(ax3, "test_slide_auc", f"{strategy}: test split")
        draw(ax3, "slide_auc", f"{strategy}: cross-validated", "--")
    seeds = len({p.seed for p in points})
    ax1.axhline(total_lesion, color="grey", linestyle=":", label="lesion patches in truth")
    ax1.set(xlabel="verdicts", ylabel="lesion patches found", title="Lesion patches found")
    ax2.set(xlabel="verdicts", ylabel="instance AUC (all patches vs truth)", title="Instance AUC")
    ax3.set(xlabel="verdicts", ylabel="slide AUC", title="Slide AUC")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if seeds > 1:
        fig.suptitle(f"mean over {seeds} seeds, band: ± 1 standard deviation", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
