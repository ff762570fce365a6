"""Time one retrain round on cached features: 100 slides x 2,000 patches (default), 2 CPU threads.

Synthetic features (float16, written through the feature store into a temporary workspace) stand
in for an encoder's output, so the round measures exactly what `wsireview retrain` adds on top
of embedding: loading, preprocessing, cross-validation, training, scoring, queueing and the
database writes. Rounds:
- the real command, `wsireview retrain`, in a fresh process: the round as a user meets it (its
  first optimiser makes torch import its compiler stack, about 2 s), and the command's wall time
  with interpreter start and imports;
- two rounds in this process: the first pays the same one-time costs, the second is warm (what
  every later retrain from the app costs).
Baselines measured in the same run:
- writing the 200,000 patch scores as ORM objects (``session.add_all``) instead of bulk core inserts;
- training on the full-width features instead of the whitened PCA projection.

    python benchmarks/retrain_time.py [--slides 100] [--patches 2000] [--dim 1280] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from wsireview.catalog import ModelVersion, open_catalog
from wsireview.learn.round import retrain
from wsireview.learn.spec import RoundSpec
from wsireview.learn.synthetic import make_synthetic_cohort
from wsireview.learn.train import TrainParams
from wsireview.workspace import Workspace

ENCODER = "synthetic"


def command_round(workspace: Workspace, catalog, threads: int) -> tuple[float, dict, dict]:
    """Run `wsireview retrain` in a fresh process: (wall seconds, the round's phase timings, metrics)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "wsireview", "--workspace", str(workspace.root), "retrain",
               "--encoder", ENCODER, "--no-progress"]
    t = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    with catalog.session() as session:
        version = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).first()
        return wall, version.params["seconds"], version.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=100)
    parser.add_argument("--patches", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1280, help="feature width (1280 = effnet-lite0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=140)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp).ensure()
        cat = open_catalog(ws.db_url)
        t = time.perf_counter()
        make_synthetic_cohort(cat, ws, ENCODER, n_slides=args.slides, n_patches=args.patches, dim=args.dim,
                              lesion_patches=(5, 20), signal=5.0, seed=0)
        console.print(f"cohort: {args.slides} slides x {args.patches} patches x {args.dim}-d float16 "
                      f"written in {time.perf_counter() - t:.1f} s")
        wall, seconds, metrics = command_round(ws, cat, args.threads)
        rows.append(("`wsireview retrain` (fresh process)", seconds["total"], seconds, metrics))
        console.print(f"`wsireview retrain` in a fresh process: {wall:.2f} s wall, of which the round "
                      f"{seconds['total']:.2f} s (the rest: interpreter start, imports, catalog, report)")
        runs = [("this process, round 1 (cold)", TrainParams()),
                ("this process, round 2 (warm)", TrainParams())]
        if not args.skip_baseline:
            runs.append(("baseline: no PCA (full width)", TrainParams(pca_dim=0)))
        for name, params in runs:
            t = time.perf_counter()
            result = retrain(cat, ws, RoundSpec(encoder=ENCODER, budget=50, seed=0, train=params))
            total = time.perf_counter() - t
            s = result.seconds
            rows.append((name, total, s, result.metrics))
        cat.close()
    table = Table(title=f"retrain round: {args.slides} slides x {args.patches} patches, {args.dim}-d, "
                        f"{args.threads} threads")
    for col in ("run", "total s", "load+prep", "cross-val", "train", "score+queue", "write", "slide AUC", "epochs"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, total, s, m in rows:
        table.add_row(name, f"{total:.2f}", f"{s['load']:.2f}", f"{s['cross_validate']:.2f}", f"{s['train']:.2f}",
                      f"{s['score_and_queue']:.2f}", f"{s['write']:.2f}",
                      f"{m['slide_auc']:.3f}" if m["slide_auc"] is not None else "-", str(m["epochs"]))
    console.print(table)


if __name__ == "__main__":
    main()
