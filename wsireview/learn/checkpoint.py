"""Model checkpoints: written atomically, one per model version, never over a committed version's file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from wsireview.files import make_ordinary
from wsireview.learn.data import Preprocessor
from wsireview.learn.model import GatedAttentionMIL
from wsireview.learn.train import TrainParams


def save_checkpoint(models_dir: Path, version_id: int, model: GatedAttentionMIL, pre: Preprocessor, meta: dict) -> Path:
    """Write ``model-<id>.pt`` atomically (a complete temporary file renamed into place); returns the path.

    The caller holds the catalog row of ``version_id`` (not yet committed), and only that version
    writes under its name, so a file already there belongs to no version: a round killed between
    writing its checkpoint and committing its row left it (SQLite hands the same id out again).
    It is replaced, with the temporary files such a round left; no committed version's file is
    touched.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".model-{version_id}-"
    for stale in models_dir.glob(f"{prefix}*.partial"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=prefix, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"state_dict": model.state_dict(), "preprocessor": pre.state(), "meta": meta}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        make_ordinary(tmp)
        path = models_dir / f"model-{version_id}.pt"
        os.replace(tmp, path)
        return path
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> tuple[GatedAttentionMIL, Preprocessor, dict]:
    data = torch.load(path, map_location="cpu", weights_only=False)
    meta = data["meta"]
    params = TrainParams(**meta["train_params"])
    # Checkpoints from before the separate instance layer share it (instance_hidden 0).
    model = GatedAttentionMIL(meta["in_dim"], params.hidden, params.attention, params.dropout,
                              instance_hidden=meta["train_params"].get("instance_hidden", 0))
    model.load_state_dict(data["state_dict"])
    model.eval()
    return model, Preprocessor.from_state(data["preprocessor"]), meta
