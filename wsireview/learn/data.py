"""Bags of patch features (one per slide) and the preprocessing fitted on a sample of patches.

A round never holds the cohort's full-width features: the projection is fitted on a seeded
sample of up to ``PCA_SAMPLE`` patches read from the mapped feature files, then each slide is
projected once, block by block, and cached in the feature store (``projected-<key>``, see
``wsireview.features.store``); the next round with the same projection reads the cache, a
twentieth of the bytes of 1,280-d features. What a round keeps in memory is the projected
features: ``pca_dim`` float32 numbers per patch (at most 64: 256 bytes against 2,560 for
float16 EfficientNet features).
"""

from __future__ import annotations

import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from numpy.lib.array_utils import byte_bounds

from wsireview.catalog import Catalog, FeatureSet
from wsireview.features.store import (
    ReadBuffer,
    feature_sets,
    load_features,
    load_projected,
    lookalikes_path,
    projected_path,
    read_feature_rows,
    read_features,
    read_soon,
    remove_other_projections,
    save_projected,
)
from wsireview.workspace import Workspace

PCA_SAMPLE = 10_000  # patches used to fit the projection: plenty for a few dozen components
PATCHES_PER_COMPONENT = 30  # the automatic PCA size: one whitened component per 30 training patches,
PCA_MIN, PCA_MAX = 32, 64  # kept between these; features no wider than PCA_MAX are not projected
TRANSFORM_ROWS = 256  # rows projected at a time (see Preprocessor.transform)
READ_AHEAD_SLIDES = 4  # slides' files the kernel is asked to read ahead of a pass (see store.read_soon)
PROJECTION_SEED = 0  # the projection is fitted without labels and must not change from round to round
# (nor between evaluate's seeds), or every slide's cached projection would be computed again


def auto_pca_dim(n_patches: int) -> int:
    """PCA components for ``n_patches`` training patches: ``n / 30``, kept within 32..64.

    Whitening gives every kept component unit variance, so a component the training patches
    cannot pin down is noise the first layer must learn to ignore: about 30 patches per component
    keeps the first layer's weights determined. From 12 demo slides (~1,900 patches) on this is
    the 64 components of before; a 6-slide cohort gets 32. More than 64 hurt where it was tried:
    on a synthetic 24-slide cohort whose 96 features are 32 latent ones mixed with a little noise,
    80 whitened components (2,400 patches / 30) took the held-out slide AUC from 1.00 to 0.56,
    the extra components being whitened noise. Features no wider than 64 (stain-stats' 49) are
    only standardised, as before: projecting them to 32 lost the lesions' attention on the
    6-slide demo.
    """
    return int(np.clip(n_patches // PATCHES_PER_COMPONENT, PCA_MIN, PCA_MAX))


@dataclass
class Bag:
    """One slide's patches: ids and (raw float16, later preprocessed float32) features."""

    slide_id: int
    patch_ids: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.patch_ids.shape[0])


def load_bags(catalog: Catalog, workspace: Workspace, encoder: str) -> list[Bag]:
    """Every ready slide's feature matrix for ``encoder`` (slides without patches are skipped)."""
    bags = []
    for slide_id, fs in sorted(feature_sets(catalog, encoder).items()):
        patch_ids, features = load_features(workspace, fs)
        if patch_ids.size:
            bags.append(Bag(slide_id, patch_ids.astype(np.int64), features))
    return bags


def sample_positions(sizes: list[int], seed: int) -> np.ndarray:
    """Sorted positions (in the concatenation of matrices of ``sizes`` rows) of the projection's
    seeded sample of up to ``PCA_SAMPLE`` patches."""
    rng = np.random.default_rng([seed, 5])
    total = int(sum(sizes))
    return np.sort(rng.choice(total, size=min(total, PCA_SAMPLE), replace=False))


@dataclass
class Preprocessor:
    """Standardisation (mean/std of training patches) and an optional whitened PCA projection.

    The projection keeps training fast on wide encoders (1280-d EfficientNet features become
    ``pca_dim`` numbers per patch); it is fitted without labels, so every CV fold can share it.
    """

    mean: np.ndarray
    std: np.ndarray
    projection: np.ndarray | None = None  # (D, K), already divided by each component's std

    @property
    def out_dim(self) -> int:
        return int(self.projection.shape[1]) if self.projection is not None else int(self.mean.shape[0])

    @classmethod
    def fit(cls, arrays: list[np.ndarray], pca_dim: int | None, seed: int) -> "Preprocessor":
        """Fit on a random sample of up to ``PCA_SAMPLE`` patches of ``arrays`` (the training slides).

        ``pca_dim`` None: :func:`auto_pca_dim` of the training patches; 0: no projection.
        """
        sizes = [a.shape[0] for a in arrays]
        picked = sample_positions(sizes, seed)
        offsets = np.cumsum([0] + sizes)
        # One float32 copy of the sampled rows, standardised in place by fit_sample.
        sample = np.empty((picked.size, arrays[0].shape[1]), np.float32)
        for i, a in enumerate(arrays):
            lo, hi = np.searchsorted(picked, [offsets[i], offsets[i + 1]])
            if hi > lo:
                sample[lo:hi] = a[picked[lo:hi] - offsets[i]]
        return cls.fit_sample(sample, int(offsets[-1]), pca_dim, seed)

    @classmethod
    def fit_sample(cls, sample: np.ndarray, total: int, pca_dim: int | None, seed: int) -> "Preprocessor":
        """Fit on ``sample`` (float32, standardised in place) of ``total`` training patches."""
        if pca_dim is None:
            pca_dim = auto_pca_dim(total) if sample.shape[1] > PCA_MAX else 0
        mean = sample.mean(0, dtype=np.float64).astype(np.float32)
        std = sample.std(0, dtype=np.float64).astype(np.float32)
        std = np.where(std < 1e-6, np.float32(1.0), std)
        pre = cls(mean, std)
        # Centred, n patches span at most n - 1 directions: a small cohort gets fewer components.
        components = min(pca_dim, sample.shape[0] - 1)
        if pca_dim and sample.shape[1] > pca_dim and components >= 1:
            sample -= mean
            sample /= std
            z = torch.from_numpy(sample)
            state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            try:
                _u, s_vals, v = torch.pca_lowrank(z, q=components, center=True, niter=2)
            finally:
                torch.random.set_rng_state(state)
            comp_std = s_vals / max(1.0, (z.shape[0] - 1) ** 0.5)
            pre.projection = (v / comp_std.clamp_min(1e-6)).numpy().astype(np.float32)
        return pre

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) - self.mean) / self.std

    @functools.cached_property
    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardisation folded into the projection: ``x @ weight + bias``."""
        weight = torch.from_numpy(self.projection / self.std[:, None])
        bias = -torch.from_numpy((self.mean / self.std) @ self.projection)
        return weight, bias

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardised (and projected) float32 features.

        Projected in blocks of ``TRANSFORM_ROWS`` rows: a block's float32 copy is still in cache for
        its matrix multiply, and no slide-sized float32 copy is made (200,000 x 1,280 features:
        0.37 s against 0.57-0.81 s converting whole slides first, on two threads; 0.70 against 0.81 s
        on the one a retrain round uses).
        """
        if self.projection is None:
            return np.ascontiguousarray(self.standardise(x))
        weight, bias = self._affine
        source = torch.from_numpy(np.asarray(x))
        out = torch.empty((source.shape[0], weight.shape[1]))
        for start in range(0, source.shape[0], TRANSFORM_ROWS):
            block = slice(start, start + TRANSFORM_ROWS)
            torch.addmm(bias, source[block].float(), weight, out=out[block])
        return out.numpy()

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std, "projection": self.projection}

    @functools.cached_property
    def key(self) -> str:
        """A short hash of the fitted numbers: names the cache of features projected by it."""
        digest = hashlib.sha256()
        for part in (self.mean, self.std, self.projection):
            if part is not None:
                digest.update(str(part.shape).encode())
                digest.update(np.ascontiguousarray(part, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    @classmethod
    def from_state(cls, state: dict) -> "Preprocessor":
        return cls(state["mean"], state["std"], state.get("projection"))


def load_projected_bags(
    catalog: Catalog, workspace: Workspace, encoder: str, pca_dim: int | None,
    fit_on: set[int] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[Preprocessor, list[Bag]]:
    """Every ready slide's features for ``encoder`` after the cohort's projection, as bags.

    The projection is fitted on a sample of the patches of the slides ``fit_on`` (the training
    slides: labelled or holding a verdict; every slide when None or none of them is embedded)
    with a fixed seed, so it stays the same from round to round until those slides change; each
    slide is read from the projected cache, or projected from its features (one slide at a time,
    read into reused memory) and cached. The bags' features are views into one float32 matrix of
    all patches.
    ``on_progress(done, total)`` after each slide.
    """
    sets = [fs for _sid, fs in sorted(feature_sets(catalog, encoder).items()) if fs.n_patches]
    if not sets:
        return Preprocessor(np.zeros(0, np.float32), np.ones(0, np.float32)), []
    fit_sets = [fs for fs in sets if fit_on is None or fs.slide_id in fit_on] or sets
    pre = _fit_on_sample(workspace, fit_sets, pca_dim)
    packed = np.empty((sum(fs.n_patches for fs in sets), pre.out_dim), np.float32)
    bags, start = [], 0
    # The next slide is read while this one is projected or copied (the read waits on the disk
    # or copies from the page cache, outside the GIL); two buffers per kind take turns.
    buffers = [(ReadBuffer(), ReadBuffer()) for _ in range(2)]  # (projected, full width), by slide parity

    def ask_ahead(fs: FeatureSet) -> None:
        """The kernel starts reading the file this pass will read for ``fs``."""
        projected_file = projected_path(workspace, fs.slide_id, encoder, pre.key)
        read_soon(projected_file if projected_file.exists() else workspace.absolute(fs.path))

    def read(i: int) -> tuple[bool, np.ndarray, np.ndarray]:
        if i + READ_AHEAD_SLIDES < len(sets):
            ask_ahead(sets[i + READ_AHEAD_SLIDES])
        projected, full = buffers[i % 2]
        cached = load_projected(workspace, sets[i], pre.key, projected)
        if cached is not None:
            return True, *cached
        return False, *read_features(workspace, sets[i], full)

    cleared = False
    with ThreadPoolExecutor(1, thread_name_prefix="read-features") as reader:
        for first in sets[:READ_AHEAD_SLIDES]:
            ask_ahead(first)
        upcoming = reader.submit(read, 0)
        for done, fs in enumerate(sets, start=1):
            was_cached, patch_ids, features = upcoming.result()
            if done < len(sets):
                upcoming = reader.submit(read, done)
            if patch_ids.shape[0] != fs.n_patches:
                raise ValueError(f"slide {fs.slide_id}: {patch_ids.shape[0]} feature rows, the catalog says {fs.n_patches}")
            rows = packed[start : start + len(patch_ids)]
            if was_cached:
                rows[:] = features
            else:
                if not cleared:  # the neighbours remembered under this projection: its rows are changing
                    lookalikes_path(workspace, encoder, pre.key).unlink(missing_ok=True)
                    cleared = True
                rows[:] = pre.transform(features)
                save_projected(workspace, fs, pre.key, patch_ids, rows)
            bags.append(Bag(fs.slide_id, np.array(patch_ids, dtype=np.int64), rows))
            start += len(patch_ids)
            if on_progress is not None:
                on_progress(done, len(sets))
    remove_other_projections(workspace, encoder, pre.key)
    return pre, bags


def _fit_on_sample(workspace: Workspace, fit_sets: list[FeatureSet], pca_dim: int | None) -> Preprocessor:
    """The cohort's preprocessing, fitted on its seeded sample (:func:`sample_positions`) of the
    ``fit_sets`` patches, each sampled row read where it lies in its file."""
    sizes = [fs.n_patches for fs in fit_sets]
    picked = sample_positions(sizes, PROJECTION_SEED)
    offsets = np.cumsum([0] + sizes)
    parts = []
    for i, fs in enumerate(fit_sets):
        lo, hi = np.searchsorted(picked, [offsets[i], offsets[i + 1]])
        if hi > lo:
            parts.append(read_feature_rows(workspace, fs, picked[lo:hi] - offsets[i]))
    sample = np.concatenate(parts).astype(np.float32)
    return Preprocessor.fit_sample(sample, int(offsets[-1]), pca_dim, PROJECTION_SEED)


class StackedRows:
    """Several matrices' rows addressed as one matrix (row ``i`` of their concatenation), without
    concatenating them: indexing (an int array, a boolean mask or a slice) gathers just those rows.

    What the look-alike search and the queue read the cohort's features through, so they see all
    patches as one matrix while the bags keep the only copy.
    """

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        sizes = np.array([p.shape[0] for p in parts], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.shape = (int(sizes.sum()), int(parts[0].shape[1]) if parts else 0)
        self.dtype = parts[0].dtype if parts else np.dtype(np.float32)
        self.whole = consecutive_rows(parts)  # the parts are one matrix already: index it directly

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if self.whole is not None:
            return self.whole[index]
        if isinstance(index, slice) and index.step in (None, 1):  # a block of rows: copied part by part
            lo, hi, _ = index.indices(self.shape[0])
            first, last = np.searchsorted(self.starts, [lo, hi], side="right") - 1
            pieces = [self.parts[j][max(lo, int(self.starts[j])) - int(self.starts[j]) : hi - int(self.starts[j])]
                      for j in range(max(first, 0), last + 1)]
            return np.concatenate(pieces) if pieces else np.empty((0, self.shape[1]), self.dtype)
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.shape[0]))
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        part = np.searchsorted(self.starts, index, side="right") - 1
        out = np.empty((index.size, self.shape[1]), self.dtype)
        for j in np.unique(part):
            sel = part == j
            out[sel] = self.parts[j][index[sel] - self.starts[j]]
        return out


def _matrix_of(parts: list[np.ndarray]) -> np.ndarray | None:
    """The C-contiguous 2-D array the (non-empty) ``parts`` are views of, when there is one."""
    filled = [p for p in parts if p.shape[0]]  # an empty view's address says nothing
    base = filled[0].base if filled else None
    return base if isinstance(base, np.ndarray) and base.ndim == 2 and base.flags.c_contiguous else None


def _first_row(base: np.ndarray, part: np.ndarray) -> int | None:
    """The row of ``base`` where ``part`` starts, when ``part`` is a C-contiguous block of its rows."""
    if part.base is not base or part.ndim != 2 or not part.flags.c_contiguous or part.shape[1] != base.shape[1]:
        return None
    start, extra = divmod(byte_bounds(part)[0] - byte_bounds(base)[0], base.shape[1] * base.itemsize)
    return None if extra else start


def consecutive_rows(parts: list[np.ndarray]) -> np.ndarray | None:
    """The one matrix ``parts`` are, when they are consecutive row blocks of one C-contiguous
    array (a round's bags are: see :func:`load_projected_bags`), as a view of it; else None."""
    base = _matrix_of(parts)
    if base is None:
        return None
    filled = [p for p in parts if p.shape[0]]
    first = end = _first_row(base, filled[0])
    for p in filled:
        if end is None or _first_row(base, p) != end:
            return None
        end += p.shape[0]
    return base[first:end]


def row_views(parts: list[np.ndarray]) -> list[torch.Tensor]:
    """``parts`` as tensors without copies; those that are row blocks of one C-contiguous float
    matrix become views of one tensor over it, so :func:`wsireview.learn.train.shared_rows` finds it."""
    tensors = [torch.from_numpy(np.ascontiguousarray(p)) for p in parts]
    base = _matrix_of(parts)
    if base is None:
        return tensors
    whole = torch.from_numpy(base)
    for i, p in enumerate(parts):
        start = _first_row(base, p)
        if start is not None:
            tensors[i] = whole[start : start + p.shape[0]]
    return tensors
