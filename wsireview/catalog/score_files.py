"""Per-patch scores of a model version: one columnar ``.npy`` file beside its checkpoint.

A round scores every patch of the cohort (5 million at 1,000 slides of 5,000 patches). As catalog
rows those scores cost about 73 bytes a patch a round with their indexes, and inserting them held
the catalog's write lock for most of a minute while reviewers' verdicts waited. As a file they
cost 28 bytes a patch, are written before the round's transaction (under a temporary name,
renamed into place inside it) and are read through a memory map, so a lookup touches only the
pages of the patches it asks for.

The file is a NumPy structured array (``np.load(path)["probability"]``...) sorted by patch id:
lookups are binary searches (``np.searchsorted``). The catalog keeps its path, relative to the
workspace, in ``model_versions.scores_path``; ``None`` there means the scores were pruned
(``wsireview db prune``) or the version never had any. This module is the one reader and writer.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from sqlalchemy import select, update

from wsireview.catalog.db import Catalog
from wsireview.catalog.models import READY, ModelVersion
from wsireview.errors import WsireviewError
from wsireview.files import make_ordinary

if TYPE_CHECKING:
    import numpy as np

# The record of one patch (NumPy is imported when a file is read or written, not with the
# catalog: `status` and the app's start-up need no NumPy).
SCORE_FIELDS = [
    ("patch_id", "<i8"),
    ("slide_id", "<i4"),
    ("attention", "<f4"),  # normalised within its slide, 0..1 (max = 1)
    ("attention_rank", "<i4"),  # 1 = highest attention in its slide
    ("probability", "<f4"),  # instance head, P(lesion)
    ("uncertainty", "<f4"),
]
STAGED_PREFIX, STAGED_SUFFIX = ".scores-", ".partial"

# What a version's scores are, for the screens and `status`.
SCORES_OK, SCORES_PRUNED, SCORES_MISSING = "ok", "scores pruned", "score file missing"


def score_file_name(version_id: int) -> str:
    return f"scores-{version_id}.npy"


class RootUnknown(WsireviewError):
    """The catalog was opened without its workspace folder, where score files live."""


@dataclass(frozen=True)
class PatchScore:
    """One patch's scores under one model version."""

    attention: float
    attention_rank: int
    probability: float
    uncertainty: float


class ScoreFile:
    """A version's scores, memory-mapped; rows sorted by patch id."""

    def __init__(self, records: np.ndarray) -> None:
        self.records = records

    @classmethod
    def open(cls, path: Path) -> "ScoreFile":
        import numpy as np

        return cls(np.load(path, mmap_mode="r"))

    def __len__(self) -> int:
        return int(self.records.shape[0])

    def column(self, name: str) -> np.ndarray:
        """A whole column (``patch_id``, ``probability``...), in patch id order."""
        import numpy as np

        return np.asarray(self.records[name])

    def rows(self, patch_ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(the asked patch ids that have scores, their rows), in the order asked."""
        import numpy as np

        wanted = np.fromiter((int(p) for p in patch_ids), dtype=np.int64)
        ids = self.records["patch_id"]
        if not wanted.size or not ids.size:
            return wanted[:0], self.records[:0]
        at = np.minimum(np.searchsorted(ids, wanted), ids.size - 1)
        found = ids[at] == wanted
        return wanted[found], np.asarray(self.records[at[found]])

    def lookup(self, patch_ids: Iterable[int]) -> dict[int, PatchScore]:
        """patch id -> its scores, for the asked patches that have any."""
        ids, rows = self.rows(patch_ids)
        return {
            int(pid): PatchScore(_shortest(r["attention"]), int(r["attention_rank"]), _shortest(r["probability"]),
                                 _shortest(r["uncertainty"]))
            for pid, r in zip(ids.tolist(), rows)
        }


def _shortest(value: np.float32) -> float:
    """A stored float32 as the shortest float that reads back as it (0.8, not 0.800000011920929):
    what screens, manifests and GeoJSON show."""
    return float(str(value))


# -- writing --------------------------------------------------------------------------------------

def stage_scores(folder: Path, patch_ids: np.ndarray, slide_ids: np.ndarray, attention: np.ndarray,
                 attention_rank: np.ndarray, probability: np.ndarray, uncertainty: np.ndarray) -> Path:
    """Write a complete score file under a temporary name in ``folder`` (fsynced); returns its path.

    Done before the round's transaction, so the catalog's write lock is held only for the rename
    (:func:`publish_scores`)."""
    import numpy as np

    records = np.empty(len(patch_ids), dtype=np.dtype(SCORE_FIELDS))
    records["patch_id"] = patch_ids
    records["slide_id"] = slide_ids
    records["attention"] = attention
    records["attention_rank"] = attention_rank
    records["probability"] = probability
    records["uncertainty"] = uncertainty
    records.sort(order="patch_id", kind="stable")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=STAGED_PREFIX, suffix=STAGED_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, records, allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        make_ordinary(tmp)  # mkstemp's 0600 would keep a shared workspace's other users out
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def publish_scores(staged: Path, folder: Path, version_id: int) -> Path:
    """Rename a staged file to the version's name. Called inside the transaction that records the
    version: a file already under that name belongs to no committed version (a round killed
    before its commit left it, and SQLite hands the same id out again), so it is replaced."""
    path = folder / score_file_name(version_id)
    os.replace(staged, path)
    return path


def write_scores(folder: Path, version_id: int, **columns: np.ndarray) -> Path:
    """Stage and publish in one go (migrations, fixtures): ``columns`` as :func:`stage_scores` takes them."""
    return publish_scores(stage_scores(folder, **columns), folder, version_id)


# -- the catalog's side ---------------------------------------------------------------------------

def _root(catalog: Catalog) -> Path:
    if catalog.root is None:
        raise RootUnknown(f"the catalog {catalog.url} was opened without its workspace folder, where score files "
                          "live: open it with the workspace (--workspace)")
    return catalog.root


def scores_path(catalog: Catalog, stored: str | None) -> Path | None:
    """The file a ``model_versions.scores_path`` names (relative to the workspace)."""
    if not stored:
        return None
    path = Path(stored)
    return path if path.is_absolute() else _root(catalog) / path


def version_scores(catalog: Catalog, version_id: int | None) -> ScoreFile | None:
    """A version's scores; None when it has none (pruned, or the file is gone)."""
    if version_id is None:
        return None
    with catalog.session() as session:
        stored = session.scalar(select(ModelVersion.scores_path).where(ModelVersion.id == version_id))
    path = scores_path(catalog, stored)
    if path is None or not path.exists():
        return None
    return ScoreFile.open(path)


def scores_state(catalog: Catalog, stored: str | None) -> str:
    """What a version's ``scores_path`` amounts to: :data:`SCORES_OK`, ``PRUNED`` or ``MISSING``."""
    path = scores_path(catalog, stored)
    if path is None:
        return SCORES_PRUNED
    return SCORES_OK if path.exists() else SCORES_MISSING


@dataclass(frozen=True)
class Pruned:
    """What ``prune_scores`` removed."""

    versions: list[int]
    files: int
    bytes: int


def prune_scores(catalog: Catalog, keep: int) -> Pruned:
    """Delete the score files of every model version but the ``keep`` newest ready ones (at least
    one). Versions, queues, predictions and reviews stay; the pruned versions' ``scores_path`` is
    cleared, so screens say "scores pruned". The row is cleared before the file goes: a crash in
    between leaves a file no row owns (``wsireview db check`` finds it), never a row without a file."""
    if keep < 1:
        raise ValueError("keep at least one version's scores (the latest queue is shown with them)")
    with catalog.session() as session:
        kept = set(session.scalars(select(ModelVersion.id).where(ModelVersion.status == READY)
                                   .order_by(ModelVersion.id.desc()).limit(keep)))
        doomed = [(vid, stored) for vid, stored in session.execute(
            select(ModelVersion.id, ModelVersion.scores_path).where(ModelVersion.scores_path.is_not(None))
            .order_by(ModelVersion.id)) if vid not in kept]
        if doomed:
            session.execute(update(ModelVersion).where(ModelVersion.id.in_([v for v, _ in doomed]))
                            .values(scores_path=None))
    files = size = 0
    for _, stored in doomed:
        path = scores_path(catalog, stored)
        if path is not None and path.exists():
            size += path.stat().st_size
            path.unlink()
            files += 1
    return Pruned([v for v, _ in doomed], files, size)
