"""No leftovers after kill -9: the next run removes or reuses what a killed command left, and
`wsireview db check [--clean]` finds (and removes) every workspace file no catalog row owns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import closing

import numpy as np
from sqlalchemy import func, select

from wsireview.catalog import FeatureSet, ModelVersion, Patch, Slide, open_catalog
from wsireview.cli import main
from wsireview.learn.checkpoint import load_checkpoint
from wsireview.learn.synthetic import make_synthetic_cohort
from wsireview.leftovers import GRACE_SECONDS

SYN = "synthetic"

# Runs the command line, dying by SIGKILL the moment the round's checkpoint is on disk: before the
# transaction that records its model version commits.
KILL_AFTER_CHECKPOINT = """
import os, signal, sys
import wsireview.learn.round as round_module
from wsireview.cli import main
real = round_module.save_checkpoint
def save_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
round_module.save_checkpoint = save_then_die
main(sys.argv[1:])
"""


def counts(ws) -> dict[str, int]:
    with closing(open_catalog(ws.db_url)) as cat, cat.session() as s:
        return {model.__tablename__: s.scalar(select(func.count()).select_from(model))
                for model in (Slide, Patch, FeatureSet, ModelVersion)}


def age(*paths, seconds: float = 2 * GRACE_SECONDS) -> None:
    """Make files look as old as a crash long ago."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def test_round_killed_after_its_checkpoint_leaves_nothing_the_next_round_does_not_reuse(workspace, catalog):
    make_synthetic_cohort(catalog, workspace, SYN, n_slides=8, n_patches=40, dim=16, seed=1)
    before = counts(workspace)
    args = ["--workspace", str(workspace.root), "retrain", "--encoder", SYN, "--budget", "5", "--epochs", "2",
            "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT, *args], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    models = workspace.root / "models"
    # What the kill left: a complete checkpoint and score file of version 1, no version row (and
    # temporary files as a kill in the middle of writing them would leave).
    assert sorted(p.name for p in models.iterdir()) == ["model-1.pt", "scores-1.npy"]
    (models / ".model-1-x1y2z3.partial").write_bytes(b"half a checkpoint")
    (models / ".scores-x1y2z3.partial").write_bytes(b"half a score file")
    assert counts(workspace) == before
    # db check sees them all; just killed, they are too recent to remove (a running round may own them).
    assert main(["--workspace", str(workspace.root), "db", "check", "--clean"]) == 1
    assert sorted(p.name for p in models.iterdir()) == [".model-1-x1y2z3.partial", ".scores-x1y2z3.partial",
                                                         "model-1.pt", "scores-1.npy"]
    age(models / ".scores-x1y2z3.partial")  # a score file staged by a round killed long ago

    assert main(args) == 0
    with catalog.session() as s:
        [version] = s.scalars(select(ModelVersion)).all()
    assert (version.id, version.checkpoint_path, version.scores_path) == (1, "models/model-1.pt", "models/scores-1.npy")
    # Reused: no model-1-1.pt; the checkpoint's temporary file went with it.
    assert sorted(p.name for p in models.iterdir()) == [".scores-x1y2z3.partial", "model-1.pt", "scores-1.npy"]
    assert main(["--workspace", str(workspace.root), "db", "check", "--clean"]) == 0
    _, _, meta = load_checkpoint(models / "model-1.pt")
    assert meta["model_version_id"] == 1
    assert counts(workspace)[ModelVersion.__tablename__] == 1
    assert sorted(p.name for p in models.iterdir()) == ["model-1.pt", "scores-1.npy"]
    assert main(["--workspace", str(workspace.root), "db", "check"]) == 0


def test_db_check_reports_and_cleans_only_what_no_row_owns(demo_workspace, capsys):
    ws = demo_workspace
    with closing(open_catalog(ws.db_url)) as cat:
        make_synthetic_cohort(cat, ws, SYN, n_slides=2, n_patches=10, dim=4, seed=2)
        with cat.session() as s:
            owned = {ws.absolute(p) for row in s.execute(select(Slide.thumbnail_path, Slide.mask_path,
                                                                Slide.overlay_path)) for p in row if p}
            owned |= {ws.absolute(p) for p in s.scalars(select(FeatureSet.path))}
            last_slide = s.scalar(select(func.max(Slide.id)))
    assert len(owned) > 6 * 3 and all(p.exists() for p in owned)
    before = counts(ws)
    gone = last_slide + 1  # a slide id no row has: an ingest killed before its commit
    features = ws.root / "features" / SYN
    exports = ws.root / "exports"
    leftovers = {
        ws.root / "models" / "model-7.pt": b"checkpoint of a version never committed",
        ws.root / "models" / ".model-8-abc.partial": b"half a checkpoint",
        features / f"slide-{gone}.npy": np.zeros(3).tobytes(),
        features / f"slide-{gone}abc.partial.npy": b"half a matrix",
        ws.root / "thumbs" / f"slide-{gone}.png": b"png",
        ws.root / "masks" / f"slide-{gone}.png": b"png",
        ws.root / "masks" / f"slide-{gone}-overlay.png": b"png",
        exports / ".train.partial-k1ll3d" / "lesion" / "case-042.svs_x0_y0_s224.png": b"png",
    }
    for path, data in leftovers.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    keep = {ws.root / "models" / "notes.txt": b"not a name the tool writes", exports / "train" / "a.png": b"png"}
    for path, data in keep.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    age(*leftovers)

    capsys.readouterr()
    assert main(["--workspace", str(ws.root), "db", "check"]) == 1
    out = capsys.readouterr().out
    assert "8 leftovers" in out and "model-7.pt" in out and ".train.partial-k1ll3d" in out
    assert all(p.exists() for p in leftovers)  # reported, not removed

    assert main(["--workspace", str(ws.root), "db", "check", "--clean"]) == 0
    assert "removed 8 leftovers; 0 left" in capsys.readouterr().out
    assert not any(p.exists() for p in leftovers) and not (exports / ".train.partial-k1ll3d").exists()
    assert all(p.exists() for p in owned | set(keep))
    assert counts(ws) == before
    assert main(["--workspace", str(ws.root), "db", "check"]) == 0
