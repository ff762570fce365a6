"""``stain-stats``: hand-made H&E features, no weights, hundreds of patches per second.

Colour deconvolution (Ruifrok-Johnston, as ``skimage.color.rgb2hed``, through a lookup table) splits each patch into
hematoxylin (nuclei) and eosin (cytoplasm, stroma). Lesions in H&E are crowded, large, dark
nuclei, so the features describe how much hematoxylin there is, how dark, how it is textured,
and how many nucleus-sized blobs of which size it forms. Values are scaled to be roughly 0..1 or
O(1) so a linear layer can use them as they are (z-scoring per dimension still helps).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import hed_from_rgb

from wsireview.features.encoders import Encoder

# Hematoxylin optical-density thresholds: any nuclear stain, nuclei, dark (crowded/large) nuclei.
H_LEVELS = (0.03, 0.06, 0.10)
E_LEVEL = 0.06
BACKGROUND_OD = 0.12  # summed RGB optical density below which a pixel is glass
PERCENTILES = (10, 25, 50, 75, 90, 99)
LOG_SIGMAS = (2.0, 4.0)  # blob detector scales in pixels (nucleus radii ~ 3-6 px at 0.5 µm/px)
BLOB_SCALE = 100.0  # counts and areas are divided by this

FEATURE_NAMES: tuple[str, ...] = (
    *(f"h_{s}" for s in ("mean", "std", *(f"p{p}" for p in PERCENTILES))),
    *(f"e_{s}" for s in ("mean", "std", *(f"p{p}" for p in PERCENTILES))),
    "od_mean", "od_std", "background_fraction",
    *(f"h_above_{t}" for t in H_LEVELS), f"e_above_{E_LEVEL}",
    "he_correlation", "h_share",
    "h_grad_mean", "h_grad_std", "h_grad_p90", "gray_grad_mean", "gray_grad_std", "gray_grad_p90",
    *(f"h_log{s:g}_{k}" for s in LOG_SIGMAS for k in ("mean", "p99")),
    "nuclei_count", "nuclei_area_mean", "nuclei_area_p90", "nuclei_large_fraction", "nuclei_per_tissue",
    "dark_nuclei_count", "dark_nuclei_area_mean",
    "dark_fraction",
    "r_mean", "g_mean", "b_mean", "r_std", "g_std", "b_std",
)


def _blob_stats(mask: np.ndarray, min_area: float, large_area: float) -> tuple[float, float, float, float]:
    """Count, mean area, 90th-percentile area and large fraction of the blobs of one boolean mask."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return 0.0, 0.0, 0.0, 0.0
    areas = np.bincount(labels.ravel())[1:].astype(np.float32)
    areas = areas[areas >= min_area]  # smaller is chromatin grain, not a nucleus
    if areas.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    return float(areas.size), float(areas.mean()), float(np.percentile(areas, 90)), float((areas > large_area).mean())


# 2 x 2 pooled sums of uint8 pixels run 0..1020; tables turn them into RGB and into the
# log-absorbance that rgb2hed multiplies by its stain matrix (same numbers, no per-pixel log).
_POOLED = np.arange(4 * 255 + 1, dtype=np.float64) / (4 * 255.0)
_RGB_LUT = _POOLED.astype(np.float32)
_HED_LOG_LUT = (np.log(np.maximum(_POOLED, 1e-6)) / np.log(1e-6)).astype(np.float32)
_OD_LUT = (-np.log10(np.maximum(_POOLED, 1.0 / 255.0))).astype(np.float32)
_HED_FROM_RGB = hed_from_rgb.astype(np.float32)


def pooled_sums(batch: np.ndarray) -> np.ndarray:
    """2 x 2 sums of ``N x H x W x 3`` uint8 pixels (``N x H/2 x W/2 x 3``, uint16): a half-resolution image.

    Everything is measured at half resolution (about 1 µm/px for 0.5 µm/px patches): nuclei
    still span several pixels, and it is 4x less work.
    """
    n, height, width, _ = batch.shape
    height, width = height - height % 2, width - width % 2
    x = batch[:, :height, :width].astype(np.uint16)
    return x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]


def hed_of(sums: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hed`` of the pooled image, through a lookup table."""
    return np.maximum(_HED_LOG_LUT[sums] @ _HED_FROM_RGB, 0)


def _rows(images: np.ndarray) -> np.ndarray:
    return images.reshape(images.shape[0], -1)


def batch_features(batch: np.ndarray) -> np.ndarray:
    """``N x len(FEATURE_NAMES)`` features of ``N x H x W x 3`` uint8 patches, vectorised over the batch."""
    n = batch.shape[0]
    sums = pooled_sums(batch)
    rgb = _RGB_LUT[sums]
    hed = hed_of(sums)
    h, e = hed[..., 0], hed[..., 1]
    hr, er = _rows(h), _rows(e)
    cols: list[np.ndarray] = []
    for rows in (hr, er):
        cols += [rows.mean(1), rows.std(1), *np.percentile(rows, PERCENTILES, axis=1)]
    od = _rows(_OD_LUT[sums].sum(axis=-1))
    tissue = od > BACKGROUND_OD
    cols += [od.mean(1), od.std(1), 1.0 - tissue.mean(1)]
    cols += [(hr > t).mean(1) for t in H_LEVELS]
    cols.append((er > E_LEVEL).mean(1))
    hc, ec = hr - hr.mean(1, keepdims=True), er - er.mean(1, keepdims=True)
    denom = np.sqrt((hc * hc).sum(1) * (ec * ec).sum(1))
    cols.append(np.where(denom > 0, (hc * ec).sum(1) / np.maximum(denom, 1e-12), 0.0))
    hsum, esum = hr.sum(1), er.sum(1)
    cols.append(hsum / np.maximum(hsum + esum, 1e-6))

    gray = rgb @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    for image in (h, gray):
        gy, gx = np.gradient(image, axis=(1, 2))
        grad = _rows(np.hypot(gx, gy)) * 20.0  # x2 for the half resolution, x10 to O(1)
        cols += [grad.mean(1), grad.std(1), np.percentile(grad, 90, axis=1)]
    for sigma in LOG_SIGMAS:
        s = sigma / 2.0  # in half-resolution pixels
        response = _rows(np.clip(-ndimage.gaussian_laplace(h, (0, s, s)) * (s * s * 10.0), 0, None))
        cols += [response.mean(1), np.percentile(response, 99, axis=1)]
    smooth = ndimage.gaussian_filter(h, (0, 0.5, 0.5))
    tissue_px = np.maximum(tissue.sum(1), 1) * 4  # in full-resolution pixels
    blobs = np.zeros((n, 7), dtype=np.float32)
    for i in range(n):
        # Areas in full-resolution pixels (x4); nuclei at 0.5 µm/px cover ~30-120 px.
        count, mean, p90, large = _blob_stats(smooth[i] > H_LEVELS[1], 6 / 4, 60 / 4)
        dark_count, dark_mean, _, _ = _blob_stats(smooth[i] > H_LEVELS[2], 6 / 4, 60 / 4)
        blobs[i] = (count, mean * 4, p90 * 4, large * BLOB_SCALE, count / tissue_px[i] * 1000.0 * BLOB_SCALE,
                    dark_count, dark_mean * 4)
    blobs /= BLOB_SCALE
    cols += list(blobs.T)
    cols.append(_rows(gray < 0.35).mean(1))
    pixels = rgb.reshape(n, -1, 3)
    cols += [*pixels.mean(1).T, *pixels.std(1).T]
    return np.stack(cols, axis=1).astype(np.float32)


class StainStats(Encoder):
    name = "stain-stats"
    dim = len(FEATURE_NAMES)
    input_px = None  # any patch size: statistics, not a network
    batch_size = 32
    backend = "numpy/scikit-image"

    def _embed_chunk(self, batch: np.ndarray) -> np.ndarray:
        return batch_features(batch)
