"""`csv` format, and the manifest every format writes: one row per exported patch.

Absent scores (no model flagged the patch, or its version has no score for it) are empty cells.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from wsireview.export.plan import ExportPatch

MANIFEST = "manifest.csv"
COLUMNS = [
    "file", "label", "slide", "x", "y", "size_level0", "patch_px", "mpp", "level0_mpp",
    "reviewers", "votes", "reviewed_at", "model_version", "attention_rank", "attention", "probability",
    "patch_id", "adjudicator",
]


def _num(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def row(p: ExportPatch) -> dict[str, str]:
    """One manifest row; times are UTC ISO 8601."""
    votes = Counter(v.verdict for v in p.item.votes)
    return {
        "file": p.file or "",
        "label": p.item.label,
        "slide": p.slide.name,
        "x": str(p.x),
        "y": str(p.y),
        "size_level0": str(p.size0),
        "patch_px": str(p.out_px),
        "mpp": _num(p.mpp),
        "level0_mpp": _num(p.slide.mpp),
        "reviewers": ";".join(p.item.reviewers),
        "votes": ";".join(f"{k}={n}" for k, n in sorted(votes.items())),
        "reviewed_at": p.item.reviewed_at.isoformat(timespec="seconds"),
        "model_version": _num(p.item.model_version_id),
        "attention_rank": _num(p.item.attention_rank),
        "attention": _num(p.item.attention),
        "probability": _num(p.item.probability),
        "patch_id": str(p.item.patch_id),
        "adjudicator": p.item.adjudication.reviewer if p.item.adjudication else "",
    }


def write_manifest(out_dir: Path, patches: list[ExportPatch]) -> Path:
    path = out_dir / MANIFEST
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for p in patches:
            writer.writerow(row(p))
    return path
