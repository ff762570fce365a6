"""Retrain rounds on cohorts of hundreds to thousands of slides: time, phases, peak memory, catalog growth.

    nice -n 10 python benchmarks/scale.py                          # 100 x 2,000 and 500 x 2,000 patches
    nice -n 10 python benchmarks/scale.py --sizes 1000x5000 --rounds 2
    python benchmarks/scale.py --sizes 20x500 --rounds 2           # a quick check
    python benchmarks/scale.py --sizes 1000x5000 --rounds 2 --cold # every round reads from disk

For each size, synthetic cached features are written once with numpy (N slides x M patches of
1,280-d float16 records, the feature store's format; no images, no encoder): a 32-d latent signal
mixed into 1,280 numbers with a little noise, as real embeddings are; every slide is labelled,
alternating lesion / normal, and each lesion slide holds a cluster of about 1% of its patches
shifted along one hidden direction (what the model has to find). Slides, patches and feature
sets are then recorded straight into a catalog made by the code under test.

Each round runs in a child process (`retrain`, budget ``--budget``), which reports its phases, its
CPU seconds (user + system: on a busy shared machine a fairer comparison than wall time) and its
peak resident memory (``ru_maxrss``); between rounds an oracle reviews the queued patches
(lesion where the signal is), so later rounds carry more verdicts. The catalog's growth is the
change in the size of its files over the round.

Baseline in the same run: the same rounds on the same features with the code of ``--baseline-rev``
(a git revision, checked out with ``git archive`` into the output folder; ``--no-baseline`` skips it).
Output goes under ``benchmarks/out/scale/`` (git-ignored); workspaces of the same size share
the feature files through hard links.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "scale"
ENCODER = "synthetic-1280"
DIM, LATENT = 1280, 32
BASELINE_REV = "0d6806d"  # main before the bounded round
LESION_SHARE = 0.01
SIGNAL = 5.0
MINUTE, MEMORY_LIMIT_GB = 60.0, 8.0


def feature_dtype() -> np.dtype:
    return np.dtype([("patch_id", "<i8"), ("features", "<f2", (DIM,))])


def write_features(folder: Path, n_slides: int, n_patches: int, seed: int = 0) -> Path:
    """The shared feature files (slide i has ids ``i * n_patches + 1 ...``) and the lesion truth."""
    done = folder / "truth.npy"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mixing = (rng.normal(size=(LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)
    direction = rng.normal(size=LATENT).astype(np.float32)
    direction /= np.linalg.norm(direction)
    lesion = []
    for s in range(n_slides):
        ids = np.arange(s * n_patches + 1, (s + 1) * n_patches + 1, dtype=np.int64)
        latent = rng.standard_normal((n_patches, LATENT), dtype=np.float32)
        if s % 2 == 0:
            k = max(3, int(LESION_SHARE * n_patches))
            start = int(rng.integers(0, n_patches - k))
            latent[start : start + k] += SIGNAL * direction
            lesion.append(ids[start : start + k])
        records = np.empty(n_patches, feature_dtype())
        records["patch_id"] = ids
        records["features"] = latent @ mixing + 0.1 * rng.standard_normal((n_patches, DIM), dtype=np.float32)
        np.save(folder / f"slide-{s + 1}.npy", records)
    np.save(done, np.concatenate(lesion))
    return folder


# ---- run in a child process, with the code under test first on sys.path ----

def child_build(ws_root: str, features: str, n_slides: int, n_patches: int) -> dict:
    from sqlalchemy import insert

    from wsireview.catalog import FeatureSet, Patch, Slide, open_catalog
    from wsireview.workspace import Workspace

    ws = Workspace.resolve(ws_root).ensure()
    folder = ws.features / ENCODER
    folder.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(ws.db_url)
    side = int(np.ceil(np.sqrt(n_patches)))
    with catalog.session() as session:
        session.execute(insert(Slide), [
            {"id": s + 1, "name": f"scale-{s + 1:04d}", "path": f"synthetic://scale/{s + 1}", "status": "ready",
             "width": side * 224, "height": side * 224, "patch_size_px": 224, "patch_size_level0": 224,
             "target_mpp": 0.5, "label": "lesion" if s % 2 == 0 else "normal"} for s in range(n_slides)])
    for s in range(n_slides):
        with catalog.session() as session:
            session.execute(insert(Patch), [
                {"id": s * n_patches + k + 1, "slide_id": s + 1, "x": (k % side) * 224, "y": (k // side) * 224,
                 "size": 224, "tissue_fraction": 1.0} for k in range(n_patches)])
        target = folder / f"slide-{s + 1}.npy"
        if not target.exists():
            os.link(Path(features) / f"slide-{s + 1}.npy", target)
    with catalog.session() as session:
        session.execute(insert(FeatureSet), [
            {"slide_id": s + 1, "encoder": ENCODER, "dim": DIM, "n_patches": n_patches, "patch_size_px": 224,
             "target_mpp": 0.5, "path": ws.relative(folder / f"slide-{s + 1}.npy")} for s in range(n_slides)])
    catalog.close()
    return {}


def child_round(ws_root: str, budget: int) -> dict:
    import resource

    from wsireview.catalog import open_catalog
    from wsireview.learn.round import retrain
    from wsireview.learn.spec import RoundSpec
    from wsireview.workspace import Workspace

    ws = Workspace.resolve(ws_root)
    catalog = open_catalog(ws.db_url)
    t = time.perf_counter()
    result = retrain(catalog, ws, RoundSpec(encoder=ENCODER, budget=budget, seed=0))
    wall = time.perf_counter() - t
    catalog.close()
    m = result.metrics
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": wall, "seconds": result.seconds, "maxrss_kb": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
            "slide_auc": m.get("slide_auc"), "instance_auc": m.get("instance_auc"),
            "instance_auc_fit": m.get("instance_auc_fit"), "version": result.model_version_id}


def run_child(code: Path, *args: str) -> dict:
    """This script's child mode under the code in ``code``; returns its JSON answer."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run([sys.executable, __file__, "--child", *args], env=env, cwd=code,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["killed"])[-1], "returncode": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the parent ----

def drop_from_page_cache(folder: Path) -> None:
    """Ask the kernel to forget the cached pages of every ``.npy`` under ``folder`` (``--cold``)."""
    for path in folder.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def catalog_bytes(ws: Path) -> int:
    return sum(p.stat().st_size for p in ws.glob("catalog.sqlite*"))


def review_queue(ws: Path, version: int, lesion: np.ndarray) -> int:
    """The oracle's verdicts on a version's queue (plain SQL: the schema of either code version)."""
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        queued = [row[0] for row in db.execute("SELECT patch_id FROM review_queue WHERE model_version_id = ?", (version,))]
        is_lesion = np.isin(np.array(queued, dtype=np.int64), lesion)
        db.executemany(
            "INSERT INTO reviews (patch_id, verdict, reviewer, created_at, model_version_id) "
            "VALUES (?, ?, 'oracle', datetime('now'), ?)",
            [(p, "lesion" if y else "not_lesion", version) for p, y in zip(queued, is_lesion.tolist())])
    return len(queued)


def baseline_code(rev: str) -> Path:
    folder = OUT / f"code-{rev}"
    if not (folder / "wsireview").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100x2000,500x2000", help="SLIDESxPATCHES, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=500, help="patches queued (and reviewed) per round")
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces (features stay in any case)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the feature files from the page cache before each round (as after a reboot)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        answer = child_build(rest[0], rest[1], int(rest[2]), int(rest[3])) if mode == "build" else \
            child_round(rest[0], int(rest[1]))
        print(json.dumps(answer))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    codes = [("this branch", ROOT)]
    if not args.no_baseline:
        codes.insert(0, (f"baseline {args.baseline_rev}", baseline_code(args.baseline_rev)))
    findings = []
    for size in args.sizes.split(","):
        n_slides, n_patches = (int(v) for v in size.lower().split("x"))
        t = time.perf_counter()
        features = write_features(OUT / f"features-{n_slides}x{n_patches}", n_slides, n_patches)
        console.print(f"{size}: features ready in {time.perf_counter() - t:.0f} s "
                      f"({n_slides * n_patches * (DIM * 2 + 8) / 1e9:.2f} GB)")
        lesion = np.load(features / "truth.npy")
        table = Table(title=f"{n_slides} slides x {n_patches:,} patches ({n_slides * n_patches:,}), {DIM}-d float16, "
                            f"budget {args.budget} per round")
        for col in ("code", "round", "verdicts", "round s", "CPU s", "load", "cv", "train", "score", "queue", "write",
                    "peak GB", "catalog +MB", "slide AUC", "inst AUC"):
            table.add_column(col, justify="left" if col == "code" else "right")
        for name, code in codes:
            ws = OUT / f"ws-{size}-{code.name}"
            if ws.exists():
                subprocess.run(["rm", "-rf", str(ws)], check=True)
            built = run_child(code, "build", str(ws), str(features), str(n_slides), str(n_patches))
            if "error" in built:
                console.print(f"{name}: building the workspace failed: {built['error']}")
                continue
            verdicts = 0
            for r in range(1, args.rounds + 1):
                if args.cold:
                    drop_from_page_cache(features)
                    drop_from_page_cache(ws / "features")
                before = catalog_bytes(ws)
                out = run_child(code, "round", str(ws), str(args.budget))
                if "error" in out:
                    table.add_row(name, str(r), str(verdicts), f"failed: {out['error'][:60]}", *[""] * 11)
                    findings.append((size, name, r, f"failed ({out['error'][:80]})"))
                    break
                s = out["seconds"]
                queue = s.get("queue")
                score = s["score_and_queue"] - queue if queue is not None else s["score_and_queue"]
                peak = out["maxrss_kb"] / 1e6
                table.add_row(name, str(r), str(verdicts), fmt(out["wall"]), fmt(out["cpu"]), fmt(s["load"]), fmt(s["cross_validate"]),
                              fmt(s["train"]), fmt(score), fmt(queue), fmt(s["write"]), fmt(peak, ".2f"),
                              fmt((catalog_bytes(ws) - before) / 1e6), fmt(out["slide_auc"], ".3f"),
                              fmt(out["instance_auc"], ".3f"))
                slow = [k for k in ("load", "cross_validate", "train", "write") if s[k] > MINUTE]
                slow += [k for k, v in (("score", score), ("queue", queue)) if v is not None and v > MINUTE]
                if slow or peak > MEMORY_LIMIT_GB:
                    findings.append((size, name, r, f"{', '.join(slow) or '-'} over a minute; peak {peak:.1f} GB"))
                verdicts += review_queue(ws, out["version"], lesion)
            if not args.keep:
                subprocess.run(["rm", "-rf", str(ws)], check=True)
        console.print(table)
    console.print("[b]over a minute or 8 GB[/b] (size, code, round, what):" if findings else "no step over a minute or 8 GB")
    for finding in findings:
        console.print("  " + " | ".join(map(str, finding)))


if __name__ == "__main__":
    main()
