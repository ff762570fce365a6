"""Seeded procedural noise as a pure function of level-0 coordinates.

Every random quantity in a demo slide is a hash of integer coordinates and a key, so any region
of a slide can be rendered on its own (tile by tile, at any size) and always gives the same
pixels: tiles join without seams and a seed reproduces a slide exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

_M1 = np.uint32(0x8DA6B343)
_M2 = np.uint32(0xD8163841)
_M3 = np.uint32(0x2C1B3C6D)
_M4 = np.uint32(0x297A2D39)


def hash_uniform(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Uniform floats in [0, 1) from integer lattice coordinates (broadcast) and a key."""
    ux = np.asarray(ix, dtype=np.int64).astype(np.uint32)
    uy = np.asarray(iy, dtype=np.int64).astype(np.uint32)
    h = ux * _M1 + uy * _M2 + np.uint32(key & 0xFFFFFFFF)
    h ^= h >> np.uint32(15)
    h *= _M3
    h ^= h >> np.uint32(12)
    h *= _M4
    h ^= h >> np.uint32(15)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def pixel_centres(start: float, count: int, step: float = 1.0) -> np.ndarray:
    """Level-0 coordinates of the centres of ``count`` pixels of size ``step`` from ``start``."""
    return start + (np.arange(count, dtype=np.float64) + 0.5) * step


def _interp_matrix(coords: np.ndarray, cell: float) -> tuple[np.ndarray, int]:
    """Smoothstep interpolation weights from lattice nodes (spacing ``cell``) to ``coords``."""
    u = coords / cell - 0.5
    i0 = np.floor(u).astype(np.int64)
    t = (u - i0).astype(np.float32)
    s = t * t * (3.0 - 2.0 * t)
    base = int(i0.min())
    n = int(i0.max()) - base + 2
    weights = np.zeros((coords.size, n), dtype=np.float32)
    rows = np.arange(coords.size)
    weights[rows, i0 - base] = 1.0 - s
    weights[rows, i0 - base + 1] = s
    return weights, base


def value_noise(xs: np.ndarray, ys: np.ndarray, cell: float | tuple[float, float], key: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] on the grid ``ys x xs`` (level-0 coordinates).

    ``cell`` is the lattice spacing in level-0 px, or ``(cell_x, cell_y)`` for streaky,
    direction-dependent noise. Separable interpolation makes this two small matrix products.
    """
    cx, cy = cast("tuple[float, float]", (cell, cell) if np.isscalar(cell) else cell)
    wx, bx = _interp_matrix(xs, cx)
    wy, by = _interp_matrix(ys, cy)
    lattice = hash_uniform(np.arange(bx, bx + wx.shape[1])[None, :], np.arange(by, by + wy.shape[1])[:, None], key)
    return (wy @ (lattice * 2.0 - 1.0)) @ wx.T


def fbm(xs: np.ndarray, ys: np.ndarray, cells: Sequence[float], key: int, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value-noise octaves (coarse to fine), normalised to about [-1, 1]."""
    total = np.zeros((ys.size, xs.size), dtype=np.float32)
    amp, norm = 1.0, 0.0
    for octave, cell in enumerate(cells):
        total += amp * value_noise(xs, ys, cell, key + 7919 * (octave + 1))
        norm += amp
        amp *= gain
    return total / np.float32(norm)


def pixel_noise(xs: np.ndarray, ys: np.ndarray, key: int) -> np.ndarray:
    """Independent per-pixel uniform noise in [-1, 1] (sensor grain, chromatin)."""
    ix = np.floor(xs).astype(np.int64)[None, :]
    iy = np.floor(ys).astype(np.int64)[:, None]
    return hash_uniform(ix, iy, key) * 2.0 - 1.0
