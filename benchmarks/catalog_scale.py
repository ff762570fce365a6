"""The catalog at cohort scale: `status`, the slides screen, the first triage patch and a round's
write, on a synthetic catalog of N slides x M patches, before and after score files.

The catalog is built directly with bulk inserts (no images, no features): slides (each naming an
empty file, so `status` finds them present), their patch grids, one model version with a score
for every patch, its slide predictions and a queue of 50, and some thousands of verdicts (a tenth
of them changed later, a twentieth undone). It is built at schema revision 0007, which kept the
scores as ``patch_scores`` rows, and measured there by the code of ``--baseline-ref`` (extracted
with `git archive` and run in a subprocess); then the current code opens it, which migrates it
(0008: the scores move into a file; timed), and measures the same steps. Each step is timed in a
fresh process, best of ``--repeat``:

- status: `catalog_status` after `mark_missing`, what `wsireview status` computes; and the whole
  command (`python -m wsireview status --json`) with interpreter start and imports;
- slides screen: `slides_overview` and `needs_labels`, what the app's first screen loads;
- first triage patch: the latest version, its queue with scores and verdicts (`queue_entries`),
  what the triage screen loads before reading the patch's pixels (no pixels here);
- round write: the round's last step (`_record`: version row, checkpoint, scores, predictions,
  queue) for a score on every patch, while another process records a verdict every 20 ms: the
  write's seconds, the catalog's growth, and how long each verdict waited (p99 and max).

    python benchmarks/catalog_scale.py [--slides 1000] [--patches 5000] [--reviews 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
BASELINE_REF = "0d6806d"  # the last commit before score files (patch_scores rows in the catalog)
BEFORE_SCORE_FILES = "0007_slide_evidence"
QUEUE = 50


# -- building the catalog (current code, schema 0007) --------------------------------------------

def build(root: Path, n_slides: int, n_patches: int, n_reviews: int, seed: int = 0) -> dict:
    from wsireview.catalog.db import make_engine, upgrade

    rng = np.random.default_rng(seed)
    files = root / "slides"
    files.mkdir(parents=True)
    engine = make_engine(f"sqlite:///{root / 'catalog.sqlite'}")
    upgrade(engine, BEFORE_SCORE_FILES)
    side = int(np.ceil(np.sqrt(n_patches)))
    now = "2026-12-01 00:00:00"
    t = time.perf_counter()
    with engine.begin() as c:
        slides = []
        for sid in range(1, n_slides + 1):
            path = files / f"case-{sid:05d}.svs"
            path.touch()
            slides.append((sid, path.name, str(path), "ready", 100_000, 80_000, 3, 0.25, 0.25, "mpp", 0.5, 224, 448,
                           0.5, ("lesion" if sid % 2 else "normal") if sid % 10 else None, 0.4, now, now))
        c.exec_driver_sql(
            "INSERT INTO slides (id, name, path, status, width, height, level_count, mpp_x, mpp_y, resolution_source, "
            "target_mpp, patch_size_px, patch_size_level0, min_tissue, label, tissue_fraction, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", slides)
        k = np.arange(n_patches)
        for sid in range(1, n_slides + 1):
            c.exec_driver_sql("INSERT INTO patches (slide_id, x, y, size, tissue_fraction) VALUES (?, ?, ?, ?, ?)",
                              list(zip([sid] * n_patches, ((k % side) * 448).tolist(), ((k // side) * 448).tolist(),
                                       [448] * n_patches, [1.0] * n_patches)))
        c.exec_driver_sql(
            "INSERT INTO model_versions (id, encoder, positive_label, params, label_counts, metrics, checkpoint_path, "
            "status, created_at) VALUES (1, 'synthetic', 'lesion', '{}', '{}', '{}', NULL, 'ready', ?)", (now,))
        total = n_slides * n_patches
        ids = np.arange(1, total + 1)
        for start in range(0, total, 200_000):
            block = ids[start:start + 200_000]
            c.exec_driver_sql("INSERT INTO patch_scores VALUES (1, ?, ?, ?, ?, ?)", list(zip(
                block.tolist(), rng.uniform(size=block.size).tolist(), (block % n_patches + 1).tolist(),
                rng.uniform(size=block.size).tolist(), rng.uniform(size=block.size).tolist())))
        c.exec_driver_sql("INSERT INTO slide_predictions (model_version_id, slide_id, probability, driver) "
                          "VALUES (1, ?, ?, 'bag')", [(sid, float(rng.uniform())) for sid in range(1, n_slides + 1)])
        reviewed = rng.choice(total, size=n_reviews + QUEUE, replace=False) + 1
        c.exec_driver_sql("INSERT INTO review_queue (model_version_id, patch_id, rank, reason, score) "
                          "VALUES (1, ?, ?, 'exploit', 0.9)", [(int(p), r) for r, p in enumerate(reviewed[:QUEUE], 1)])
        verdicts = rng.choice(["lesion", "not_lesion", "unsure", "artifact"], size=n_reviews, p=[0.2, 0.6, 0.1, 0.1])
        rows = [(int(p), str(v), f"reviewer-{i % 3}", now, 3.0, 1) for i, (p, v) in enumerate(zip(reviewed[QUEUE:], verdicts))]
        rows += [(p, "not_lesion", r, now, 2.0, 1) for p, _, r, *_ in rows[: n_reviews // 10]]  # minds changed
        c.exec_driver_sql("INSERT INTO reviews (patch_id, verdict, reviewer, created_at, seconds_taken, "
                          "model_version_id) VALUES (?, ?, ?, ?, ?, ?)", rows)
        c.exec_driver_sql("UPDATE reviews SET undone_at = ? WHERE id % 20 = 0", (now,))
    engine.dispose()
    return {"seconds": time.perf_counter() - t, "bytes": (root / "catalog.sqlite").stat().st_size}


# -- measuring (runs in a subprocess, with either code on its path) ------------------------------

def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(root: Path, repeat: int) -> dict:
    from wsireview.catalog import open_catalog
    from wsireview.catalog.queries import latest_model_version_id, queue_entries, slides_overview
    from wsireview.learn.labels import needs_labels
    from wsireview.status import catalog_status, mark_missing
    from wsireview.workspace import Workspace

    ws = Workspace.resolve(root)
    catalog = open_catalog(ws.db_url, migrate=False)

    def status():
        mark_missing(catalog)
        catalog_status(catalog, ws)

    def first_patch():
        latest_model_version_id(catalog)
        entries = queue_entries(catalog)
        assert len(entries) == QUEUE and entries[0].probability is not None

    out = {"status": _best(status, repeat),
           "slides screen": _best(lambda: (slides_overview(catalog), needs_labels(catalog)), repeat),
           "first triage patch": _best(first_patch, repeat)}
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    out["`wsireview status --json`"] = _best(lambda: subprocess.run(
        [sys.executable, "-m", "wsireview", "--workspace", str(root), "status", "--json"], check=True, env=env,
        stdout=subprocess.DEVNULL), repeat)
    catalog.close()
    return out


REVIEWER = """
import sys, time, json
from wsireview.catalog import open_catalog
from wsireview.learn.reviews import record_verdict
catalog = open_catalog(sys.argv[1], migrate=False)
stop, ready, waits = sys.argv[2], sys.argv[4], []
import os
from sqlalchemy.exc import OperationalError
while not os.path.exists(stop):
    t = time.time()
    try:
        record_verdict(catalog, int(sys.argv[3]), "unsure", "concurrent")
        waits.append((t, time.time(), False))
    except OperationalError:  # "database is locked": waited past the busy timeout (30 s)
        waits.append((t, time.time(), True))
    if len(waits) == 1:
        open(ready, "w").close()
    time.sleep(0.02)
print(json.dumps(waits))
"""


def measure_write(root: Path) -> dict:
    """The round's write of a new version with a score for every patch, with a reviewer writing meanwhile."""
    import torch
    from types import SimpleNamespace

    from wsireview.catalog import Patch, open_catalog
    from wsireview.learn.data import Preprocessor
    from wsireview.learn.model import GatedAttentionMIL
    from wsireview.learn.query import QueuePick
    from wsireview.learn.round import _record
    from wsireview.learn.scoring import PatchScores
    from wsireview.learn.slide_predictions import SlideScore
    from wsireview.learn.spec import RoundSpec
    from wsireview.learn.train import TrainParams
    from wsireview.workspace import Workspace
    from sqlalchemy import select

    ws = Workspace.resolve(root)
    catalog = open_catalog(ws.db_url, migrate=False)
    with catalog.session() as s:
        rows = np.array(s.execute(select(Patch.id, Patch.slide_id).order_by(Patch.id)).all(), dtype=np.int64)
    rng = np.random.default_rng(1)
    n = len(rows)
    scores = PatchScores(patch_ids=rows[:, 0], slide_ids=rows[:, 1], attention=rng.uniform(size=n),
                         attention_rank=np.arange(n) % 5000 + 1, probability=rng.uniform(size=n),
                         uncertainty=rng.uniform(size=n))
    params = TrainParams()
    torch.manual_seed(0)
    model = GatedAttentionMIL(64, params.hidden, params.attention, params.dropout)
    pre = Preprocessor(np.zeros(1280, np.float32), np.ones(1280, np.float32), np.zeros((1280, 64), np.float32))
    slides = sorted(set(rows[:, 1].tolist()))
    slide_prob = {sid: SlideScore(0.5, 0.5, 0.5, "bag", False) for sid in slides}
    queue = [QueuePick(int(p), "exploit", 0.9) for p in rows[:QUEUE, 0]]
    with catalog.engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (root / "catalog.sqlite").stat().st_size
    stop, ready = root / "stop-reviewer", root / "reviewer-ready"
    reviewer = subprocess.Popen([sys.executable, "-c", REVIEWER, ws.db_url, str(stop), str(int(rows[-1, 0])),
                                 str(ready)], stdout=subprocess.PIPE, text=True)
    while not ready.exists():  # the reviewer's interpreter and imports, and its first verdict
        time.sleep(0.05)
    time.sleep(0.2)
    t = time.time()
    _record(catalog, ws, RoundSpec(encoder="synthetic"), None, params, SimpleNamespace(best_epoch=1, val_slides=[]),
            {}, {}, model, pre, scores, slide_prob, queue)
    end = time.time()
    seconds = end - t
    time.sleep(0.3)
    stop.touch()
    # The verdicts that were being written while the round wrote (a blocked one started before
    # the round's transaction and ended after it).
    during = [(b - a, failed) for a, b, failed in json.loads(reviewer.communicate()[0]) if b >= t and a <= end]
    waits = np.array([w for w, _ in during])
    stop.unlink()
    ready.unlink()
    with catalog.engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    after = (root / "catalog.sqlite").stat().st_size
    catalog.close()
    return {"round write": seconds, "catalog growth MB": (after - before) / 1e6,
            "verdict wait p99 ms": float(np.percentile(waits, 99)) * 1000, "verdict wait max ms": float(waits.max()) * 1000,
            "verdicts during write": int(waits.size), "verdicts failed (locked)": sum(f for _, f in during)}


def _in_subprocess(what: str, root: Path, source: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, str(source / "benchmarks" / "catalog_scale.py") if (
        source / "benchmarks" / "catalog_scale.py").exists() else __file__, "--measure", what, str(root),
        "--repeat", str(repeat)], env=env, capture_output=True, text=True, cwd=source)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--patches", type=int, default=5000, help="patches per slide")
    parser.add_argument("--reviews", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-ref", default=BASELINE_REF, help="git ref of the baseline code (default: %(default)s)")
    parser.add_argument("--baseline-src", type=Path, help="the baseline's source tree, instead of `git archive REF`")
    parser.add_argument("--no-write", action="store_true", help="skip the round-write measurement")
    parser.add_argument("--measure", nargs=2, metavar=("WHAT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        what, root = args.measure
        print(json.dumps(measure(Path(root), args.repeat) if what == "reads" else measure_write(Path(root))))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="catalog-scale-") as tmp:
        tmp = Path(tmp)
        baseline_src = tmp / "baseline-src"
        if args.baseline_src:
            shutil.copytree(args.baseline_src, baseline_src)
        else:
            baseline_src.mkdir()
            archive = subprocess.run(["git", "-C", str(PROJECT), "archive", args.baseline_ref], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline_src)], input=archive, check=True)
        (baseline_src / "benchmarks" / "catalog_scale.py").write_text(Path(__file__).read_text())
        root = tmp / "ws"
        built = build(root, args.slides, args.patches, args.reviews)
        console.print(f"catalog: {args.slides} slides x {args.patches} patches, {args.reviews} verdicts, one version "
                      f"scored: built in {built['seconds']:.0f} s, {built['bytes'] / 1e6:.0f} MB at {BEFORE_SCORE_FILES}")
        before = _in_subprocess("reads", root, baseline_src, args.repeat)
        if not args.no_write:
            before |= _in_subprocess("write", root, baseline_src, 1)
        from wsireview.catalog import open_catalog

        t = time.perf_counter()
        migrated = open_catalog(f"sqlite:///{root / 'catalog.sqlite'}")  # migrates to head
        migrate = time.perf_counter() - t
        with migrated.engine.connect() as c:
            c.exec_driver_sql("VACUUM")
        migrated.close()
        size = (root / "catalog.sqlite").stat().st_size
        after = _in_subprocess("reads", root, PROJECT, args.repeat)
        if not args.no_write:
            after |= _in_subprocess("write", root, PROJECT, 1)
    versions = 1 if args.no_write else 2  # the baseline's write added a version
    console.print(f"migration to score files (the scores of {versions} versions x {args.slides * args.patches:,} "
                  f"patches move into files): {migrate:.1f} s; catalog {size / 1e6:.0f} MB after it and a VACUUM")
    table = Table(title=f"catalog at {args.slides} slides x {args.patches} patches ({args.slides * args.patches:,}), "
                        f"best of {args.repeat}; baseline: {args.baseline_ref} on the same catalog")
    for column in ("step", f"baseline ({args.baseline_ref})", "score files", "target"):
        table.add_column(column, justify="left" if column == "step" else "right")
    targets = {"status": "< 1 s", "slides screen": "< 1.5 s", "first triage patch": "< 2 s",
               "verdict wait p99 ms": "< 100"}
    for key in before:
        b, a = before[key], after.get(key)
        fmt = (lambda v: f"{v:.0f}") if "ms" in key or "verdicts" in key else (
            lambda v: f"{v:.1f}") if "MB" in key else (lambda v: f"{v:.3f} s")
        table.add_row(key, fmt(b), fmt(a) if a is not None else "-", targets.get(key, ""))
    console.print(table)


if __name__ == "__main__":
    main()
