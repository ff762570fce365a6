"""The feature store: one float16 matrix per slide and encoder, rows aligned with patch ids.

Each slide's features are one ``.npy`` file of records, one per patch: ``patch_id`` (int64) and
``features`` (float16 vector), so ids and rows can never part. ``np.load(path)["features"]`` gives
the matrix. A ``.npy`` can be memory-mapped: loading 100 slides x 2,000 x 1,280 takes 0.02-0.06 s
mapped against 0.55-0.65 s for the ``.npz`` archive used before (zip members read and checked),
and the features are read once, by the projection that uses them. ``.npz`` files of older
workspaces are still read.

A file is written to a temporary name and renamed, and the ``feature_sets`` row is added only
after the rename, so an interrupted run never leaves a matrix that looks complete.

Beside each encoder's matrices, ``projected-<key>/slide-N.npy`` holds the same patches after a
round's projection (``wsireview.learn.data.Preprocessor``, ``key`` a hash of it): float32 records
of ``pca_dim`` numbers instead of 1,280, written once per (feature set, projection) so the next
round reads a twentieth of the bytes; beside them ``lookalike-neighbours.npz``, each verdict's
nearest patches (``wsireview.learn.lookalike.Neighbours``). They are a cache: a projected file
older than its slide's features is computed again (and the neighbours forgotten), and a round
removes the folders of projections it no longer uses.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sqlalchemy import select

from wsireview.catalog import READY, Catalog, FeatureSet, Slide
from wsireview.files import make_ordinary
from wsireview.workspace import Workspace


def encoder_slug(encoder: str) -> str:
    """A file-system-safe folder name for an encoder name such as ``torchscript:/x/model.pt``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder).strip("_") or "encoder"


def features_path(workspace: Workspace, slide_id: int, encoder: str) -> Path:
    return workspace.features / encoder_slug(encoder) / f"slide-{slide_id}.npy"


PROJECTED_PREFIX = "projected-"


def projected_path(workspace: Workspace, slide_id: int, encoder: str, key: str) -> Path:
    """Where one slide's features after the projection ``key`` are cached."""
    return workspace.features / encoder_slug(encoder) / f"{PROJECTED_PREFIX}{key}" / f"slide-{slide_id}.npy"


def lookalikes_path(workspace: Workspace, encoder: str, key: str) -> Path:
    """Where the verdicts' nearest patches under projection ``key`` are remembered between rounds."""
    return workspace.features / encoder_slug(encoder) / f"{PROJECTED_PREFIX}{key}" / "lookalike-neighbours.npz"


def feature_records(patch_ids: np.ndarray, features: np.ndarray, dtype: str = "<f2") -> np.ndarray:
    """The records one file holds: ``(patch_id int64, features float16[D])`` per patch (or ``dtype``)."""
    record = np.dtype([("patch_id", "<i8"), ("features", dtype, (features.shape[1],))])
    records = np.empty(patch_ids.shape[0], dtype=record)
    records["patch_id"] = patch_ids
    records["features"] = features
    return records


def write_features_file(path: Path, patch_ids: np.ndarray, features: np.ndarray) -> None:
    """Write one slide's records to ``path`` atomically: a temporary name in the same folder, then a rename.

    Needs no catalog, so a cluster worker calls it too; a writer killed half-way leaves only a
    ``*.partial.npy`` file that no catalog row points to (``db check --clean`` removes it).
    """
    patch_ids = np.asarray(patch_ids, dtype=np.int64)
    features = np.asarray(features, dtype=np.float16)
    if features.ndim != 2 or features.shape[0] != patch_ids.shape[0]:
        raise ValueError(f"features {features.shape} do not align with {patch_ids.shape[0]} patch ids")
    write_records(path, feature_records(patch_ids, features))


def record_feature_set(
    catalog: Catalog,
    workspace: Workspace,
    slide: Slide,
    encoder: str,
    path: Path,
    dim: int,
    n_patches: int,
    patch_size_px: int,
) -> FeatureSet:
    """Record (or replace) the ``feature_sets`` row of a file already written by :func:`write_features_file`."""
    with catalog.session() as session:
        row = session.scalar(
            select(FeatureSet).where(FeatureSet.slide_id == slide.id, FeatureSet.encoder == encoder)
        )
        if row is None:
            row = FeatureSet(slide_id=slide.id, encoder=encoder)
            session.add(row)
        previous = workspace.absolute(row.path) if row.path else None
        row.dim = int(dim)
        row.n_patches = int(n_patches)
        row.patch_size_px = int(patch_size_px)
        row.target_mpp = slide.target_mpp
        row.path = workspace.relative(path)
    if previous is not None and previous != path:
        previous.unlink(missing_ok=True)  # an older workspace's .npz, replaced by the .npy above
    return row


def write_records(path: Path, records: np.ndarray, sync: bool = True) -> None:
    """Write ``records`` to ``path`` through a temporary name and a rename: never half a file.

    ``sync``: flush to disk before the rename (a cache that can be computed again skips it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".partial.npy")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, records)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        make_ordinary(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_projected(workspace: Workspace, feature_set: FeatureSet, key: str,
                   buffer: ReadBuffer | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(patch_ids, projected float32 features)`` cached for ``feature_set`` under projection ``key``,
    read into memory (into ``buffer``, see :func:`read_records`); None when there is none or it is
    older than the features it came from."""
    path = projected_path(workspace, feature_set.slide_id, feature_set.encoder, key)
    source = workspace.absolute(feature_set.path)
    try:
        if source is not None and path.stat().st_mtime_ns < source.stat().st_mtime_ns:
            return None
        records = read_records(path, buffer)
    except (OSError, ValueError):
        return None
    if records.shape[0] != feature_set.n_patches:
        return None
    return records["patch_id"], records["features"]


def save_projected(workspace: Workspace, feature_set: FeatureSet, key: str, patch_ids: np.ndarray,
                   projected: np.ndarray) -> None:
    """Cache one slide's projected features (float32) under projection ``key``."""
    path = projected_path(workspace, feature_set.slide_id, feature_set.encoder, key)
    write_records(path, feature_records(patch_ids, projected, "<f4"), sync=False)


def remove_other_projections(workspace: Workspace, encoder: str, key: str) -> None:
    """Drop the cached projections of ``encoder`` other than ``key`` (a new projection replaced them)."""
    folder = workspace.features / encoder_slug(encoder)
    for stale in folder.glob(f"{PROJECTED_PREFIX}*"):
        if stale.is_dir() and stale.name != f"{PROJECTED_PREFIX}{key}":
            shutil.rmtree(stale, ignore_errors=True)


def save_features(
    catalog: Catalog,
    workspace: Workspace,
    slide: Slide,
    encoder: str,
    patch_ids: np.ndarray,
    features: np.ndarray,
    patch_size_px: int,
) -> FeatureSet:
    """Write one slide's matrix atomically, then record (or replace) its ``feature_sets`` row."""
    path = features_path(workspace, slide.id, encoder)
    write_features_file(path, patch_ids, features)
    return record_feature_set(catalog, workspace, slide, encoder, path, features.shape[1], features.shape[0],
                              patch_size_px)


def load_features(workspace: Workspace, feature_set: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """``(patch_ids int64, features float16)`` of one recorded feature set."""
    path = workspace.absolute(feature_set.path)
    assert path is not None  # a feature set's path column is never empty
    if path.suffix == ".npz":  # written before the store moved to .npy records
        with np.load(path) as data:
            return data["patch_ids"], data["features"]
    # Mapped copy-on-write: nothing is read until used, and a caller may still write to the arrays.
    records = np.load(path, mmap_mode="c")
    return records["patch_id"], records["features"]


def _npy_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` file ``handle`` is open on, leaving it at the first byte of data."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if fortran or not shape:
        raise ValueError(f"{handle.name}: not a file of records")
    return shape, dtype


class ReadBuffer:
    """Memory one file's records are read into and the next file's reuse (see :func:`read_records`)."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def take(self, n: int, dtype: np.dtype) -> np.ndarray:
        """``n`` records of ``dtype``: the kept memory when it is of that type and large enough."""
        if self.array is None or self.array.dtype != dtype or self.array.shape[0] < n:
            self.array = np.empty(n, dtype)
        return self.array[:n]


def read_records(path: Path, buffer: ReadBuffer | None = None) -> np.ndarray:
    """All records of a ``.npy`` file, read with plain reads (into ``buffer``'s memory when given:
    a pass over every slide reuses one allocation instead of making one per slide).

    Not mapped: a mapped file's pages count in the process's memory until it is unmapped, and
    the kernel's read-ahead (8 MB a fault on some disks) maps megabytes around every row read.
    """
    with open(path, "rb") as handle:
        shape, dtype = _npy_header(handle)
        out = (buffer or ReadBuffer()).take(shape[0], dtype)
        if handle.readinto(out.view(np.uint8).data) != out.nbytes:
            raise ValueError(f"{path.name}: shorter than its header says")
    return out


def read_soon(path: Path | None) -> None:
    """Ask the kernel to start reading ``path`` now (``POSIX_FADV_WILLNEED``), ahead of a pass that
    reads it a few files later: several reads in flight instead of one. A round's first pass over
    1,000 slides of 1,280-d features from disk took 20-27 s one file at a time, 14 s with the next
    four asked for (the disk reads 1.08 GB/s with direct 4 MB reads). A hint: never an error."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None or path is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_feature_rows(workspace: Workspace, feature_set: FeatureSet, rows: np.ndarray) -> np.ndarray:
    """The features of rows ``rows`` of one feature set, each read where it lies: a sample of a
    few rows per slide costs kilobytes of reads and memory, not the slide's matrix."""
    path = workspace.absolute(feature_set.path)
    assert path is not None  # a feature set's path column is never empty
    if path.suffix == ".npz":
        return np.asarray(load_features(workspace, feature_set)[1][rows])
    with open(path, "rb") as handle:
        shape, dtype = _npy_header(handle)
        start, size, fd = handle.tell(), dtype.itemsize, handle.fileno()
        if rows.size and int(rows.max()) >= shape[0]:
            raise ValueError(f"{path.name}: row {int(rows.max())} of {shape[0]}")
        data = b"".join(os.pread(fd, size, start + int(r) * size) for r in rows)
    if len(data) != rows.size * size:
        raise ValueError(f"{path.name}: shorter than its header says")
    return np.frombuffer(data, dtype)["features"]


def read_features(workspace: Workspace, feature_set: FeatureSet,
                  buffer: ReadBuffer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(patch_ids, features)`` of one feature set read into memory (into ``buffer``, see
    :func:`read_records`): for a pass over every slide, where mapping would leave each in memory."""
    path = workspace.absolute(feature_set.path)
    assert path is not None  # a feature set's path column is never empty
    if path.suffix == ".npz":
        return load_features(workspace, feature_set)
    records = read_records(path, buffer)
    return records["patch_id"], records["features"]


def feature_sets(catalog: Catalog, encoder: str) -> dict[int, FeatureSet]:
    """Recorded feature sets of one encoder, by slide id (only slides still ready)."""
    with catalog.session() as session:
        rows = session.scalars(
            select(FeatureSet).join(Slide, Slide.id == FeatureSet.slide_id)
            .where(FeatureSet.encoder == encoder, Slide.status == READY)
        ).all()
    return {row.slide_id: row for row in rows}


def features_status(catalog: Catalog) -> dict:
    """Per encoder: ready slides embedded, patches and feature dimension (for ``status --json``)."""
    with catalog.session() as session:
        rows = session.execute(
            select(FeatureSet.encoder, FeatureSet.n_patches, FeatureSet.dim)
            .join(Slide, Slide.id == FeatureSet.slide_id).where(Slide.status == READY)
        ).all()
    out: dict[str, dict] = {}
    for encoder, n_patches, dim in rows:
        entry = out.setdefault(encoder, {"slides": 0, "patches": 0, "dim": dim})
        entry["slides"] += 1
        entry["patches"] += n_patches
    return out
