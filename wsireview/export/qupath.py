"""`qupath` format: one GeoJSON FeatureCollection per slide, as QuPath 0.4+ writes and imports.

Each patch is a Feature with a UUID ``id``, a closed Polygon in level-0 pixels (origin top-left),
and ``properties`` holding ``objectType``, ``classification`` {name, color [r, g, b]} and flat
``measurements`` (name -> number). File > Import objects in QuPath shows the patches classified and
with their scores in the measurement table. Absent scores are left out (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from wsireview.catalog import ARTIFACT, LESION, NOT_LESION, UNSURE
from wsireview.export.atomic import ExportError
from wsireview.export.plan import ExportPatch, ExportPlan

OBJECT_TYPES = ("detection", "annotation")
COLORS = {LESION: [220, 40, 40], NOT_LESION: [40, 160, 70], UNSURE: [230, 190, 30], ARTIFACT: [130, 130, 130]}


def feature(p: ExportPatch, object_type: str = "detection") -> dict:
    x0, y0, x1, y1 = p.x, p.y, p.x + p.size0, p.y + p.size0
    measurements = {
        "attention": p.item.attention,
        "probability": p.item.probability,
        "attention rank": p.item.attention_rank,
        "reviewers agreeing": len(p.item.supporters),
        "reviewers": len(p.item.votes),
    }
    return {
        "type": "Feature",
        "id": p.uuid,
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "properties": {
            "objectType": object_type,
            "classification": {"name": p.item.label, "color": COLORS.get(p.item.label, [0, 0, 255])},
            "measurements": {k: v for k, v in measurements.items()
                             if v is not None and not (isinstance(v, float) and math.isnan(v))},
        },
    }


def write(out_dir: Path, plan: ExportPlan, advance: Callable[[int], None],
          object_type: str = "detection") -> list[Path]:
    if object_type not in OBJECT_TYPES:
        raise ExportError(f"unknown QuPath object type {object_type!r}: choose {', '.join(OBJECT_TYPES)}")
    files = []
    for slide_id, patches in plan.by_slide().items():
        path = out_dir / f"{plan.slides[slide_id].stem}.geojson"
        doc = {"type": "FeatureCollection", "features": [feature(p, object_type) for p in patches]}
        path.write_text(json.dumps(doc, indent=1, allow_nan=False), encoding="utf-8")
        files.append(path)
        advance(len(patches))
    return files
