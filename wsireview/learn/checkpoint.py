"""Model checkpoints: written atomically, never over an earlier file."""

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
    """Write ``model-<id>.pt`` (or ``model-<id>-<n>.pt`` if that name is taken); returns the path.

    The file appears under its final name by a hard link from a complete temporary file, which
    fails rather than replaces when the name exists: an earlier version is never overwritten.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=f".model-{version_id}-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"state_dict": model.state_dict(), "preprocessor": pre.state(), "meta": meta}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        make_ordinary(tmp)
        n = 0
        while True:
            path = models_dir / (f"model-{version_id}.pt" if n == 0 else f"model-{version_id}-{n}.pt")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                n += 1
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
