"""Ground truth for the simulated oracle: which patches lie mostly inside a lesion polygon.

``--truth DIR`` holds ``<slide file stem>.geojson`` FeatureCollections whose Polygon (and
MultiPolygon) features are lesion regions in level-0 pixels; a slide without a file has none.
Each polygon is rasterised with scikit-image on a grid of ``cell`` level-0 px around its bounding
box (holes cut out), and a patch's lesion share is the share of its cells whose centres fall
inside. A patch is lesion when that share exceeds one half.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage.draw import polygon as fill_polygon
from sqlalchemy import select

from wsireview.catalog import READY, Catalog, Patch, Slide
from wsireview.errors import WsireviewError

CELLS_PER_PATCH = 32  # cells a side: shares are exact to about 1/32 of a patch side


def read_polygons(path: Path) -> list[list[np.ndarray]]:
    """Polygons (a list of rings, exterior first, each an (n, 2) array of x, y) of a GeoJSON file."""
    doc = json.loads(path.read_text())
    features = doc.get("features", []) if doc.get("type") == "FeatureCollection" else [doc]
    polygons = []
    for feature in features:
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            parts = [geometry["coordinates"]]
        elif geometry.get("type") == "MultiPolygon":
            parts = geometry["coordinates"]
        else:
            continue
        for rings in parts:
            polygons.append([np.asarray(r, dtype=np.float64)[:, :2] for r in rings if len(r) >= 3])
    return polygons


def lesion_share(polygons: list[list[np.ndarray]], xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray:
    """Share of each patch (top-left ``xs, ys``, side ``size``) covered by the polygons."""
    share = np.zeros(xs.shape[0], dtype=np.float64)
    cell = max(1.0, size / CELLS_PER_PATCH)
    for rings in polygons:
        if not rings:
            continue
        x0, y0 = rings[0].min(0)
        x1, y1 = rings[0].max(0)
        near = (xs < x1) & (xs + size > x0) & (ys < y1) & (ys + size > y0)
        if not near.any():
            continue
        gx0 = np.floor(x0 / cell) * cell
        gy0 = np.floor(y0 / cell) * cell
        shape = (int(np.ceil((y1 - gy0) / cell)) + 1, int(np.ceil((x1 - gx0) / cell)) + 1)
        mask = np.zeros(shape, dtype=bool)
        for k, ring in enumerate(rings):
            # Cell (r, c) has its centre at (gx0 + (c + 0.5) cell, gy0 + (r + 0.5) cell).
            rr, cc = fill_polygon((ring[:, 1] - gy0) / cell - 0.5, (ring[:, 0] - gx0) / cell - 0.5, shape)
            mask[rr, cc] = k == 0  # exterior fills, holes clear
        integral = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        for i in np.flatnonzero(near):
            c0 = int(np.clip(np.ceil((xs[i] - gx0) / cell - 0.5), 0, shape[1]))
            c1 = int(np.clip(np.ceil((xs[i] + size - gx0) / cell - 0.5), 0, shape[1]))
            r0 = int(np.clip(np.ceil((ys[i] - gy0) / cell - 0.5), 0, shape[0]))
            r1 = int(np.clip(np.ceil((ys[i] + size - gy0) / cell - 0.5), 0, shape[0]))
            inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
            share[i] += inside / (size / cell) ** 2
    return np.minimum(share, 1.0)


class NoTruthFiles(WsireviewError, ValueError):
    """No ``<slide stem>.geojson`` in the truth folder belongs to a catalog slide: a wrong or empty
    folder, which would otherwise score every patch as "no lesion" and evaluate nothing."""


def truth_file(truth_dir: Path, path: str | None, name: str) -> Path:
    """Where a slide's ground truth would be: ``<slide file stem>.geojson`` in ``truth_dir``."""
    return Path(truth_dir) / f"{Path(path or name).stem}.geojson"


def truth_labels(catalog: Catalog, truth_dir: Path, threshold: float = 0.5) -> dict[int, bool]:
    """``{patch_id: is lesion}`` for every patch of every ready slide in the catalog.

    Raises :class:`NoTruthFiles` when ready slides exist but none has a truth file.
    """
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"truth folder not found: {truth_dir}")
    with catalog.session() as session:
        slides = session.execute(select(Slide.id, Slide.path, Slide.name).where(Slide.status == READY)).all()
        patches = session.execute(select(Patch.id, Patch.slide_id, Patch.x, Patch.y, Patch.size)).all()
    if slides and not any(truth_file(truth_dir, path, name).exists() for _, path, name in slides):
        found = len(list(truth_dir.glob("*.geojson")))
        example = truth_file(truth_dir, slides[0].path, slides[0].name).name
        held = (f"its {found} .geojson file{' matches' if found == 1 else 's match'} no slide" if found
                else "it holds no .geojson file")
        raise NoTruthFiles(f"no ground truth for any catalog slide in {truth_dir}: expected <slide file stem>.geojson "
                           f"(e.g. {example}) and {held}; check --truth")
    by_slide: dict[int, list] = {}
    for row in patches:
        by_slide.setdefault(row.slide_id, []).append(row)
    out: dict[int, bool] = {}
    for sid, path, name in slides:
        rows = by_slide.get(sid, [])
        if not rows:
            continue
        ids = np.array([r.id for r in rows])
        geojson = truth_file(truth_dir, path, name)
        if not geojson.exists():
            out.update({int(i): False for i in ids})
            continue
        xs = np.array([r.x for r in rows], dtype=np.float64)
        ys = np.array([r.y for r in rows], dtype=np.float64)
        sizes = {r.size for r in rows}
        share = np.zeros(len(rows))
        polygons = read_polygons(geojson)
        for size in sizes:  # one patch size per slide in practice
            sel = np.array([r.size == size for r in rows])
            share[sel] = lesion_share(polygons, xs[sel], ys[sel], size)
        out.update({int(i): bool(s > threshold) for i, s in zip(ids, share)})
    return out
