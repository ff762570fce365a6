"""The patch grid: non-overlapping squares over the slide, kept where enough of them is tissue."""

from __future__ import annotations

import numpy as np


def patch_grid(
    mask: np.ndarray,
    slide_size: tuple[int, int],
    patch_size0: int,
    min_tissue: float = 0.5,
) -> list[tuple[int, int, float]]:
    """``(x, y, tissue_fraction)`` in level-0 pixels of every grid patch with enough tissue.

    ``mask`` is the tissue mask at thumbnail scale covering the whole slide. Each patch's tissue
    share is the area-weighted mean of the mask over the patch's footprint, computed exactly
    from a summed-area table, so patches that cover only a few thumbnail pixels are still right.
    """
    width, height = slide_size
    if patch_size0 <= 0 or width < patch_size0 or height < patch_size0:
        return []
    mh, mw = mask.shape
    sx, sy = mw / width, mh / height  # thumbnail pixels per level-0 pixel
    cols, rows = width // patch_size0, height // patch_size0
    xs = np.arange(cols) * patch_size0
    ys = np.arange(rows) * patch_size0

    table = np.zeros((mh + 1, mw + 1), dtype=np.float64)
    table[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.float64), axis=0), axis=1)

    def area(y_edges: np.ndarray, x_edges: np.ndarray) -> np.ndarray:
        """Mask sum over [0, y) x [0, x) for fractional edges, bilinear in the summed-area table."""
        yi = np.clip(np.floor(y_edges).astype(int), 0, mh - 1)
        xi = np.clip(np.floor(x_edges).astype(int), 0, mw - 1)
        fy = np.clip(y_edges - yi, 0, 1)[:, None]
        fx = np.clip(x_edges - xi, 0, 1)[None, :]
        t00 = table[yi][:, xi]
        t01 = table[yi][:, xi + 1]
        t10 = table[yi + 1][:, xi]
        t11 = table[yi + 1][:, xi + 1]
        return t00 * (1 - fy) * (1 - fx) + t01 * (1 - fy) * fx + t10 * fy * (1 - fx) + t11 * fy * fx

    y_edges = np.append(ys, ys[-1] + patch_size0) * sy
    x_edges = np.append(xs, xs[-1] + patch_size0) * sx
    cum = area(y_edges, x_edges)
    sums = cum[1:, 1:] - cum[:-1, 1:] - cum[1:, :-1] + cum[:-1, :-1]
    footprint = (patch_size0 * sx) * (patch_size0 * sy)
    fractions = np.clip(sums / footprint, 0.0, 1.0)
    keep_rows, keep_cols = np.nonzero(fractions >= min_tissue)
    return [(int(xs[c]), int(ys[r]), float(fractions[r, c])) for r, c in zip(keep_rows, keep_cols)]
