"""Tissue detection at thumbnail scale: what is tissue, and what is glass, pen, dust or smudge.

In the spirit of CLAM and deepslide: saturation thresholding after a median blur, morphological
clean-up, removal of small specks and holes. Two rules reject the usual artifacts: pen ink is
strongly saturated green or blue (stains never are) or strongly saturated true red (eosin is
pink to magenta, bluer than red marker ink, and rarely as saturated), and dust, smudges and black ink are dark or
grey (no stain saturation), so the saturation threshold and a darkness cut remove them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from PIL import Image
from skimage import filters, morphology
from skimage.filters import rank


@dataclass(frozen=True)
class TissueParams:
    """Thresholds on 0..1 HSV channels; areas are fractions of the thumbnail's pixel count."""

    median_size: int = 7  # CLAM's mthresh
    min_saturation: float = 0.06  # floor under the Otsu threshold (CLAM's sthresh 8/255 ~ 0.03, plus noise)
    max_saturation_threshold: float = 0.2  # Otsu cap, so faint tissue on a clean slide is kept
    max_value: float = 0.93  # brighter than this is glass, whatever its tint
    min_value: float = 0.15  # darker than this is black ink or debris, not stained tissue
    min_component_median_value: float = 0.35  # a whole region this dark is ink or debris
    pen_min_saturation: float = 0.35  # pen ink is far more saturated than stained tissue...
    pen_hues: tuple[tuple[float, float], ...] = ((0.17, 0.52), (0.52, 0.69))  # ...and green or blue
    # Red and dark-red marker: hue within ~18 degrees of pure red, and more saturated than eosin gets.
    # Magenta-pink eosin lies at 0.85-0.95; on cmu-1 this rule takes 0.5 points of its tissue.
    red_pen_min_saturation: float = 0.6
    red_pen_hues: tuple[tuple[float, float], ...] = ((0.95, 1.01), (0.0, 0.05))
    closing_radius: int = 2  # CLAM's close = 4 at its scale
    opening_radius: int = 1  # removes hairline fibres and scratches
    min_object_fraction: float = 2e-4  # specks smaller than this share of the thumbnail go
    min_hole_fraction: float = 2e-4  # holes smaller than this are filled


def pen_mask(hsv: np.ndarray, params: TissueParams = TissueParams()) -> np.ndarray:
    """Pixels of green, blue, red or dark-red marker ink (on glass and over tissue)."""
    hue, sat = hsv[..., 0], hsv[..., 1]
    return ((_in_hues(hue, params.pen_hues) & (sat >= params.pen_min_saturation))
            | (_in_hues(hue, params.red_pen_hues) & (sat >= params.red_pen_min_saturation)))


def _in_hues(hue: np.ndarray, ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    inside = np.zeros(hue.shape, dtype=bool)
    for low, high in ranges:
        inside |= (hue >= low) & (hue < high)
    return inside


def tissue_mask(rgb: np.ndarray, params: TissueParams = TissueParams()) -> np.ndarray:
    """A boolean mask of tissue for an RGB thumbnail (H x W x 3, uint8)."""
    rgb = np.ascontiguousarray(np.asarray(rgb)[..., :3], dtype=np.uint8)
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), dtype=np.float32) / 255.0  # PIL: fast, 0..1 here
    footprint = np.ones((params.median_size, params.median_size), dtype=bool)
    saturation = rank.median((hsv[..., 1] * 255).astype(np.uint8), footprint=footprint) / 255.0
    value = hsv[..., 2]

    threshold = params.min_saturation
    foreground = saturation[value < params.max_value]
    if foreground.size > 16 and np.ptp(foreground) > 0:
        otsu = filters.threshold_otsu(saturation)
        threshold = float(np.clip(otsu, params.min_saturation, params.max_saturation_threshold))

    mask = (saturation >= threshold) & (value < params.max_value) & (value > params.min_value)
    mask &= ~ndimage.binary_dilation(pen_mask(hsv, params), morphology.disk(2))
    mask = ndimage.binary_closing(mask, morphology.disk(params.closing_radius), border_value=0)
    mask = ndimage.binary_opening(mask, morphology.disk(params.opening_radius))
    area = mask.size
    mask = morphology.remove_small_objects(mask, max_size=max(1, int(params.min_object_fraction * area)))
    mask = morphology.remove_small_holes(mask, max_size=max(1, int(params.min_hole_fraction * area)))
    return _drop_dark_regions(mask, value, params.min_component_median_value)


def _drop_dark_regions(mask: np.ndarray, value: np.ndarray, min_median: float) -> np.ndarray:
    """Remove connected regions that are dark as a whole (ink strokes, debris), not just in places."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    medians = np.asarray(ndimage.median(value, labels, index=np.arange(1, count + 1)))
    dark = np.flatnonzero(medians < min_median) + 1
    return mask & ~np.isin(labels, dark) if dark.size else mask


def tissue_overlay(rgb: np.ndarray, mask: np.ndarray, outline=(255, 200, 0), shade: float = 0.55) -> np.ndarray:
    """The thumbnail with everything that is not tissue shaded dark and the tissue outlined.

    Shading the rejected area (rather than tinting tissue) keeps stain colours true and makes a
    rejected pen mark or speck obvious at a glance.
    """
    from skimage.segmentation import find_boundaries

    out = np.asarray(rgb)[..., :3].astype(np.float32).copy()
    out[~mask] *= 1.0 - shade
    out[find_boundaries(mask, mode="outer")] = np.array(outline, dtype=np.float32)
    return out.clip(0, 255).astype(np.uint8)
