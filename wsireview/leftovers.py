"""Files in the workspace that no catalog row owns: what a killed command leaves behind.

Every file the tool keeps in the workspace belongs to a catalog row: a checkpoint to its model
version, a feature matrix to its feature set, a thumbnail and masks to their slide. A command
killed between writing a file and committing its row, or while writing under a temporary name,
leaves a file nobody owns; so does an export killed before its rename (a hidden
``.OUT.partial-*`` folder, whose file names carry slide names). ``wsireview db check`` lists them
and ``--clean`` removes them.

Only names the tool itself writes are considered (``models/model-*.pt``, ``models/scores-*.npy``,
``features/*/slide-*``, ``thumbs/slide-*.png``, ``masks/slide-*.png``, their temporary files,
hidden export folders):
anything else in the workspace is left alone. A file changed in the last :data:`GRACE_SECONDS`
may belong to a command still running (written, its row not yet committed), so it is reported
as recent and not removed; an export folder is known to be running by its lock instead.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from wsireview.catalog import Catalog, FeatureSet, ModelVersion, Slide
from wsireview.export.atomic import HIDDEN_DIR, abandoned_dirs, remove_abandoned
from wsireview.workspace import Workspace

# Longer than any command takes between writing a file and committing the row that owns it.
GRACE_SECONDS = 60.0

CHECKPOINT, SCORES, FEATURES, SLIDE_IMAGE, TEMPORARY, PARTIAL_EXPORT = (
    "checkpoint", "score file", "feature matrix", "slide image", "temporary file", "partial export")

# (folder, file-name pattern, kind) of every file the tool writes into the workspace.
OWNED_NAMES = (
    ("models", re.compile(r"^model-\d+(-\d+)?\.pt$"), CHECKPOINT),
    ("models", re.compile(r"^\.model-\d+-.*\.partial$"), TEMPORARY),
    ("models", re.compile(r"^scores-\d+\.npy$"), SCORES),
    ("models", re.compile(r"^\.scores-.*\.partial$"), TEMPORARY),
    ("features/*", re.compile(r"^slide-\d+\.np[yz]$"), FEATURES),
    ("features/*", re.compile(r"^slide-\d+.*\.partial\.npy$"), TEMPORARY),
    ("features/*/projected-*", re.compile(r"^slide-\d+.*\.partial\.npy$"), TEMPORARY),  # a killed round's cache
    ("thumbs", re.compile(r"^slide-\d+\.png$"), SLIDE_IMAGE),
    ("masks", re.compile(r"^slide-\d+(-overlay)?\.png$"), SLIDE_IMAGE),
)


@dataclass(frozen=True)
class Leftover:
    path: Path
    kind: str
    bytes: int
    recent: bool = False  # changed within the grace period: a running command may still own it


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def _owned(catalog: Catalog, workspace: Workspace) -> set[Path]:
    """Every workspace file a catalog row names."""
    with catalog.session() as session:
        stored = [*session.scalars(select(ModelVersion.checkpoint_path)),
                  *session.scalars(select(ModelVersion.scores_path)),
                  *session.scalars(select(FeatureSet.path)),
                  *(p for row in session.execute(select(Slide.thumbnail_path, Slide.mask_path, Slide.overlay_path))
                    for p in row)]
    return {path.resolve() for s in stored if (path := workspace.absolute(s)) is not None}


def _hidden_export_dirs(root: Path) -> list[Path]:
    """Hidden export folders anywhere in the workspace that no running export holds."""
    found: list[Path] = []
    for folder, dirs, _files in os.walk(root):
        if any(HIDDEN_DIR.match(d) for d in dirs):
            found += abandoned_dirs(Path(folder))
        dirs[:] = [d for d in dirs if not HIDDEN_DIR.match(d)]
    return found


def find_leftovers(catalog: Catalog, workspace: Workspace, grace_seconds: float = GRACE_SECONDS) -> list[Leftover]:
    """Files and hidden export folders in the workspace that no catalog row owns."""
    owned = _owned(catalog, workspace)
    now = time.time()
    found: list[Leftover] = []
    for folder, pattern, kind in OWNED_NAMES:
        for path in sorted(workspace.root.glob(f"{folder}/*")):
            if not pattern.match(path.name) or not path.is_file() or path.resolve() in owned:
                continue
            stat = path.stat()
            found.append(Leftover(path, kind, stat.st_size, recent=now - stat.st_mtime < grace_seconds))
    found += [Leftover(path, PARTIAL_EXPORT, _size(path)) for path in _hidden_export_dirs(workspace.root)]
    return found


def remove_leftovers(leftovers: list[Leftover]) -> list[Leftover]:
    """Remove what no command can still own (recent files stay); returns what was removed."""
    removed = []
    for leftover in leftovers:
        if leftover.recent:
            continue
        if leftover.kind == PARTIAL_EXPORT:
            if not remove_abandoned(leftover.path):
                continue
        elif leftover.path.is_dir():
            shutil.rmtree(leftover.path)
        else:
            leftover.path.unlink(missing_ok=True)
        removed.append(leftover)
    return removed
