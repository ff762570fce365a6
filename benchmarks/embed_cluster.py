"""Embedding on a Dask LocalCluster of 2 worker processes against the single-process path, same slides, same run.

For each encoder: `embed_slides` (one process, the model on every core, reading threads ahead of
it) and `embed_on_cluster` on a `LocalCluster` started once beforehand (one task per slide, one
task thread per worker, each worker's model on its share of the cores). Reported: the wall time
of the embedding (model building included on both sides: the workers build theirs on their first
slide), the ratio, and the overhead per slide; the cluster's start-up is shown apart. The
features of both paths are compared (cosine per patch). A last row times Dask itself: empty
tasks carrying a slide's patch grid, round trip per task.

    .venv/bin/python benchmarks/embed_cluster.py [--slides 4] [--encoders stain-stats,effnet-lite0]

On 2 cores parity is expected, not gain: the point is that the same code runs on 50 machines.
The machine may be shared: the load average before and after is printed with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import delete

from wsireview.catalog import FeatureSet, open_catalog
from wsireview.features.cluster import connect, embed_on_cluster
from wsireview.features.embed import embed_slides, patch_grid
from wsireview.features.store import feature_sets, load_features
from wsireview.workspace import Workspace

console = Console(width=140)


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def forget_features(catalog, workspace: Workspace) -> None:
    with catalog.session() as session:
        session.execute(delete(FeatureSet))
    shutil.rmtree(workspace.features, ignore_errors=True)


def read_back(catalog, workspace: Workspace, encoder: str) -> dict[int, np.ndarray]:
    return {sid: np.asarray(load_features(workspace, fs)[1], dtype=np.float64)
            for sid, fs in feature_sets(catalog, encoder).items()}


def min_cosine(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> float:
    assert sorted(a) == sorted(b), "the two paths embedded different slides"
    worst = 1.0
    for sid in a:
        x, y = a[sid], b[sid]
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
        worst = min(worst, float(cos.min()))
    return worst


def _noop(payload) -> int:
    return len(payload[0])


def dask_round_trip(client, catalog, slide_id: int, tasks: int = 40) -> float:
    """Seconds per empty task carrying one slide's patch ids and coordinates (submitted one after another)."""
    grid = patch_grid(catalog, slide_id)
    client.submit(_noop, grid, pure=False).result()  # warm
    started = time.perf_counter()
    for _ in range(tasks):
        client.submit(_noop, grid, pure=False).result()
    return (time.perf_counter() - started) / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=4, help="demo slides (small)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    parser.add_argument("--encoders", default="stain-stats,effnet-lite0", help="comma-separated encoder names")
    parser.add_argument("--runtime", default="auto", help="effnet-lite0 runtime on both paths (auto, eager, compile, onnx)")
    parser.add_argument("--precision", default="auto", help="effnet-lite0 precision on both paths (auto, fp32, bf16)")
    args = parser.parse_args()
    import torch

    from wsireview.demo import generate_cohort
    from wsireview.ingest import add_paths

    load_before = load()
    console.print(f"{os.cpu_count()} cores, load average {load_before:.2f} at start")
    tmp = Path(tempfile.mkdtemp(prefix="embed-cluster-bench-"))
    try:
        cohort = tmp / "cohort"
        generate_cohort(cohort, n_slides=args.slides, size="small", seed=0)
        workspace = Workspace.resolve(tmp / "ws").ensure()
        catalog = open_catalog(workspace.db_url)
        add_paths(catalog, workspace, [cohort])

        stack = contextlib.ExitStack()
        started = time.perf_counter()
        client = stack.enter_context(connect(f"local:{args.workers}"))
        address = client.scheduler.address
        startup = time.perf_counter() - started
        console.print(f"LocalCluster of {args.workers} started in {startup:.1f} s; this process computes with "
                      f"{torch.get_num_threads()} torch threads")

        table = Table(title=f"embedding {args.slides} demo slides: one process against a LocalCluster of "
                            f"{args.workers} workers")
        for col in ("encoder", "path", "backend", "patches", "embed s", "patches/s", "cluster / one process",
                    "overhead per slide s", "cosine min"):
            table.add_column(col, justify="left" if col in ("encoder", "path", "backend") else "right")
        for encoder in [e.strip() for e in args.encoders.split(",") if e.strip()]:
            forget_features(catalog, workspace)
            started = time.perf_counter()
            single = embed_slides(catalog, workspace, encoder, runtime=args.runtime, precision=args.precision)
            single_s = time.perf_counter() - started
            reference = read_back(catalog, workspace, encoder)
            forget_features(catalog, workspace)
            started = time.perf_counter()
            on_cluster = embed_on_cluster(catalog, workspace, address, encoder, runtime=args.runtime,
                                          precision=args.precision)
            cluster_s = time.perf_counter() - started
            cosine = min_cosine(reference, read_back(catalog, workspace, encoder))
            n = len(single.results)
            table.add_row(encoder, "one process (baseline)", single.backend, f"{single.patches:,}", f"{single_s:.1f}",
                          f"{single.patches / single_s:,.1f}", "1.00", "-", "-")
            table.add_row("", f"LocalCluster x {args.workers}", on_cluster.backend, f"{on_cluster.patches:,}",
                          f"{cluster_s:.1f}", f"{on_cluster.patches / cluster_s:,.1f}", f"{single_s / cluster_s:.2f}",
                          f"{(cluster_s - single_s) / n:+.2f}", f"{cosine:.6f}")
            console.print(f"{encoder}: one process {single_s:.1f} s ({single.backend}), cluster {cluster_s:.1f} s "
                          f"({on_cluster.backend}), load average {load():.2f}")
        per_task = dask_round_trip(client, catalog, 1)
        table.add_row("(empty task)", "Dask round trip", "one slide's grid per task", "-", "-", "-", "-",
                      f"{per_task:.3f}", "-")
        console.print(table)
        console.print(f"LocalCluster start-up: {startup:.1f} s (not in the times above). "
                      f"Ratio > 1: the cluster is faster. Load average {load_before:.2f} before, {load():.2f} after.")
        stack.close()
        catalog.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
