"""Marker ink drawn over real tissue for pen tests: strokes of dye that absorb light (Beer-Lambert),
translucent, with soft edges and uneven density, as a felt marker leaves them on a slide."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Transmittance of one layer of ink per channel (R, G, B): red marker passes red and absorbs
# green and blue; dark red ("burgundy") absorbs more of everything.
RED = (0.90, 0.20, 0.26)
DARK_RED = (0.50, 0.06, 0.10)


def stroke_density(shape: tuple[int, int], seed: int, strokes: int = 3, width: float = 14.0) -> np.ndarray:
    """Ink density 0..1 of ``strokes`` wavy marker lines across an image of ``shape``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    canvas = np.zeros(shape, dtype=np.float32)
    for _ in range(strokes):
        t = np.linspace(0, 1, 4 * max(h, w))
        x0, x1 = rng.uniform(0, w, 2)
        y0, y1 = rng.uniform(0, h, 2)
        amplitude, waves, phase = rng.uniform(0.03, 0.12) * min(h, w), rng.uniform(1, 3), rng.uniform(0, 6.3)
        dx, dy = x1 - x0, y1 - y0
        norm = np.hypot(dx, dy) or 1.0
        wobble = amplitude * np.sin(2 * np.pi * waves * t + phase)
        xs = x0 + dx * t - dy / norm * wobble
        ys = y0 + dy * t + dx / norm * wobble
        keep = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        canvas[ys[keep].astype(int), xs[keep].astype(int)] = 1.0
    core = ndimage.distance_transform_edt(canvas == 0) <= width / 2
    density = ndimage.gaussian_filter(core.astype(np.float32), width / 6)  # soft edges
    unevenness = ndimage.gaussian_filter(rng.uniform(0.65, 1.0, shape).astype(np.float32), 6)
    unevenness = 0.7 + 0.3 * (unevenness - unevenness.min()) / max(1e-6, np.ptp(unevenness))
    return np.clip(density / max(1e-6, density.max()), 0, 1) * unevenness


def apply_ink(rgb: np.ndarray, density: np.ndarray, transmittance: tuple[float, float, float],
              layers: float = 1.0) -> np.ndarray:
    """``rgb`` seen through ink of ``density`` (0..1), ``layers`` coats thick where the density is 1."""
    optical = -np.log(np.asarray(transmittance, dtype=np.float32)) * layers
    inked = rgb.astype(np.float32) * np.exp(-density[..., None] * optical)
    return np.clip(inked + np.random.default_rng(0).normal(0, 1.5, rgb.shape), 0, 255).astype(np.uint8)
