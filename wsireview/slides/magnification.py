"""Magnification and µm per pixel: one convention for the whole tool.

An objective's magnification and the pixel size it images at are tied by 10 µm at 1x: 20x is
0.5 µm/px, 40x is 0.25 µm/px, 10x is 1.0 µm/px. This is the convention CLAM and TRIDENT use (and
most scanners roughly follow), so patch sizes derived from an objective power, and the
magnifications written into exports, agree with what those tools compute.
"""

from __future__ import annotations

MICRONS_PER_PIXEL_AT_1X = 10.0


def magnification_from_mpp(mpp: float) -> float:
    """The magnification that images at ``mpp`` µm per pixel (0.5 -> 20)."""
    return MICRONS_PER_PIXEL_AT_1X / mpp


def mpp_from_magnification(magnification: float) -> float:
    """The µm per pixel at ``magnification`` (20 -> 0.5)."""
    return MICRONS_PER_PIXEL_AT_1X / magnification
