"""Ground truth of a demo slide: lesion polygons (GeoJSON, level-0 px) and coarse tissue masks.

All of it is computed from the same fields the renderer draws, never from the pixels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.measure import approximate_polygon, find_contours, points_in_poly

from wsireview.demo.difficulty import INFLAMED_STROMA
from wsireview.demo.noise import pixel_centres
from wsireview.demo.spec import SlideSpec

MAX_TRUTH_SIDE = 2048
POLYGON_STEP = 2.0  # level-0 px between samples of the lesion field when tracing outlines
MIN_POLYGON_AREA = 200.0  # level-0 px^2: drop noise specks split off a lesion's edge


def truth_downsample(width: int, height: int) -> int:
    """Power-of-two downsample at which the truth masks are stored (long side <= 2048)."""
    ds = 1
    while max(width, height) / ds > MAX_TRUTH_SIDE:
        ds *= 2
    return ds


def coarse_masks(spec: SlideSpec, downsample: int) -> tuple[np.ndarray, np.ndarray]:
    """(tissue, artifacts) boolean masks sampled at the centres of ``downsample`` px blocks."""
    xs = pixel_centres(0, math.ceil(spec.width / downsample), downsample)
    ys = pixel_centres(0, math.ceil(spec.height / downsample), downsample)
    artifacts = spec.artifact_mask(xs, ys)
    tissue = (spec.tissue_field(xs, ys) > 0) & ~artifacts
    return tissue, artifacts


def lesion_polygons(spec: SlideSpec) -> list[list[list[tuple[float, float]]]]:
    """Each lesion region as a polygon: a list of rings (exterior first), closed, in level-0 px."""
    polygons: list[list[list[tuple[float, float]]]] = []
    for les in spec.lesions:
        polygons.extend(_trace(*spec.own_lesion_field(les, POLYGON_STEP)))
    return polygons


def mimic_polygons(spec: SlideSpec) -> list[tuple[str, list[list[tuple[float, float]]]]]:
    """``(kind, polygon)`` of each mimic (inflammatory cluster, crushed tissue, inflamed stroma), traced
    like the lesions (inflamed stroma on a coarser grid: it spreads over the whole slide)."""
    out = [(m.kind, polygon) for m in spec.mimics for polygon in _trace(*spec.own_mimic_field(m, POLYGON_STEP))]
    if math.isfinite(spec.inflamed_threshold):
        step = max(8.0, spec.size / 500)
        xs = pixel_centres(0, math.ceil(spec.width / step), step)
        ys = pixel_centres(0, math.ceil(spec.height / step), step)
        field = spec.inflamed_field(xs, ys, spec.tissue_field(xs, ys))
        assert field is not None  # the threshold is finite
        out += [(INFLAMED_STROMA, polygon) for polygon in _trace(xs, ys, field, step)]
    return out


def _trace(xs: np.ndarray, ys: np.ndarray, field: np.ndarray,
           step: float = POLYGON_STEP) -> list[list[list[tuple[float, float]]]]:
    """The outlines of ``field > 0`` (sampled every ``step`` px at ``xs, ys``) as polygons."""
    field = np.pad(field, 1, constant_values=-1.0)
    rings = []
    for contour in find_contours(field, 0.0):
        contour = approximate_polygon(contour, tolerance=0.5)
        ring = [(float(xs[0] + (c - 1) * step), float(ys[0] + (r - 1) * step)) for r, c in contour]
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        if len(ring) >= 4:
            rings.append(ring)
    rings.sort(key=lambda ring: -abs(ring_area(ring)))
    return [polygon for polygon in _nest(rings) if polygon_area(polygon) >= MIN_POLYGON_AREA]


def _nest(rings: list[list[tuple[float, float]]]) -> list[list[list[tuple[float, float]]]]:
    """Group rings (largest first) into polygons: a ring inside an exterior is its hole."""
    polygons: list[list[list[tuple[float, float]]]] = []
    for ring in rings:
        for polygon in polygons:
            if points_in_poly(np.asarray(ring[:1]), np.asarray(polygon[0]))[0]:
                polygon.append(ring)
                break
        else:
            polygons.append([ring])
    return polygons


def ring_area(ring: list[tuple[float, float]]) -> float:
    pts = np.asarray(ring)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def polygon_area(polygon: list[list[tuple[float, float]]]) -> float:
    return abs(ring_area(polygon[0])) - sum(abs(ring_area(hole)) for hole in polygon[1:])


def write_geojson(path: Path, polygons: list[list[list[tuple[float, float]]]]) -> None:
    """A FeatureCollection of lesion polygons (QuPath reads it as annotations classified "Lesion")."""
    _write_features(path, [(polygon, {"classification": {"name": "Lesion"}, "label": "lesion"}) for polygon in polygons])


def write_mimics_geojson(path: Path, mimics: list[tuple[str, list[list[tuple[float, float]]]]]) -> None:
    """The mimics as annotations classified "Mimic", labelled ``not lesion``, with their ``kind``."""
    _write_features(path, [(polygon, {"classification": {"name": "Mimic"}, "label": "not lesion", "kind": kind})
                           for kind, polygon in mimics])


def _write_features(path: Path, polygons: list[tuple[list[list[tuple[float, float]]], dict]]) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[round(x, 1), round(y, 1)] for x, y in ring] for ring in polygon]},
            "properties": {"objectType": "annotation", **properties},
        }
        for polygon, properties in polygons
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


def write_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def read_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127
