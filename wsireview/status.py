"""The catalog at a glance, as one JSON-ready document (for `status`, `add --json` and scripts)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from wsireview.catalog import FAILED, MISSING, READY, Catalog, Slide
from wsireview.catalog.progress import queue_progress
from wsireview.catalog.queries import latest_model_version_id, slides_overview
from wsireview.errors import WsireviewError
from wsireview.learn.reviews import verdict_counts
from wsireview.workspace import Workspace


def slide_rows(catalog: Catalog, workspace: Workspace) -> list[dict]:
    """Each slide of :func:`~wsireview.catalog.queries.slides_overview` as JSON-ready fields."""
    rows = []
    for s in slides_overview(catalog):
        rows.append(
            {
                "id": s.id,
                "name": s.name,
                "path": s.path,
                "status": s.status,
                "reason": s.reason,
                "warning": s.warning,
                "vendor": s.vendor,
                "width": s.width,
                "height": s.height,
                "levels": s.levels,
                "mpp": s.mpp,
                "objective_power": s.objective_power,
                "resolution_source": s.resolution_source,
                "patch_size_level0": s.patch_size_level0,
                "tissue_fraction": s.tissue_fraction,
                "patches": s.patches,
                "label": s.label,
                "label_set_by": s.label_set_by,
                "label_set_at": s.label_set_at.isoformat() if s.label_set_at else None,
                "thumbnail": str(workspace.absolute(s.thumbnail_path)) if s.thumbnail_path else None,
                "mask": str(workspace.absolute(s.mask_path)) if s.mask_path else None,
                "overlay": str(workspace.absolute(s.overlay_path)) if s.overlay_path else None,
            }
        )
    return rows


def catalog_status(catalog: Catalog, workspace: Workspace) -> dict:
    """Slides, totals, labels, verdicts and the latest model: the document `status --json` prints."""
    slides = slide_rows(catalog, workspace)
    by_status = Counter(s["status"] for s in slides)
    labels = Counter(s["label"] for s in slides if s["label"])
    doc = {
        "workspace": str(workspace.root),
        "slides": slides,
        "totals": {
            "slides": len(slides),
            "by_status": dict(by_status),
            "patches": sum(s["patches"] for s in slides),
            "labels": dict(labels),
            "zero_patches": [s["name"] for s in slides if s["status"] == READY and s["patches"] == 0],
        },
        "grids": [{"patch_size_px": px, "target_mpp": mpp, "slides": n} for (px, mpp), n in patch_grids(catalog).items()],
        "verdicts": verdict_counts(catalog),
        "queue": latest_queue_progress(catalog),
    }
    try:
        from wsireview.learn.status import model_status
    except ImportError:  # the learning package is optional for a bare catalog
        return doc
    doc["model"] = model_status(catalog)
    return doc


def latest_queue_progress(catalog: Catalog) -> dict | None:
    """The newest model version's queue: reviewed by the team and by each reviewer, and who holds
    claims on what is left (None before the first model)."""
    version = latest_model_version_id(catalog)
    return queue_progress(catalog, version).as_dict() if version is not None else None


def patch_grids(catalog: Catalog) -> dict[tuple[int | None, float | None], int]:
    """Ready slides by patch grid resolution (patch side in px, target µm/px). More than one means
    the catalog's patches differ in resolution: features of one do not compare with the other."""
    with catalog.session() as session:
        rows = session.execute(
            select(Slide.patch_size_px, Slide.target_mpp, func.count())
            .where(Slide.status == READY).group_by(Slide.patch_size_px, Slide.target_mpp)
        ).all()
    return {(px, mpp): n for px, mpp, n in rows}


def mixed_grids_warning(grids: dict[tuple[int | None, float | None], int]) -> str | None:
    """One line when ready slides were cut at different patch resolutions, else None."""
    if len(grids) < 2:
        return None
    parts = ", ".join(f"{n} at {px} px / {mpp} µm/px" for (px, mpp), n in sorted(grids.items(), key=lambda kv: (-kv[1], kv[0][0] or 0, kv[0][1] or 0)))
    return (f"slides differ in patch resolution ({parts}): their features do not compare; "
            "re-tile them to one grid with `wsireview retile --patch-size PX --mpp UM`")


class MixedGrids(WsireviewError):
    """Ready slides cut at different patch resolutions: a model trained on both would mix features
    that do not compare. ``warning`` says which grids, without the command-line way out."""

    def __init__(self, warning: str) -> None:
        super().__init__(f"{warning}, or retrain --mixed-grids to train on them as they are")
        self.warning = warning


def refuse_mixed_grids(catalog: Catalog) -> None:
    """The one rule training follows: raise :class:`MixedGrids` when ready slides differ in patch grid."""
    if warning := mixed_grids_warning(patch_grids(catalog)):
        raise MixedGrids(warning)


def mark_unreadable(catalog: Catalog, slide_id: int, reason: str) -> None:
    """Mark a ready slide failed when its pixels turn out unreadable after ingest (in embed or
    export), so it is not left "ready"; its patches and reviews stay. `add` checks it again.
    A slide whose file has gone is marked missing instead, as :func:`mark_missing` would."""
    with catalog.session() as session:
        row = session.get(Slide, slide_id)
        if row is None or row.status != READY:
            return
        if not Path(row.path).exists():
            row.status, row.reason = MISSING, f"file not found: {row.path}"
        else:
            row.status, row.reason, row.warning = FAILED, reason, None


def mark_missing(catalog: Catalog) -> list[str]:
    """Mark slides whose file has disappeared as missing (never deleted: their reviews stay). A file
    back at its path is ready again when its bytes match the catalogued ones, else failed until
    `add` examines it."""
    missing = []
    with catalog.session() as session:
        for row in session.scalars(select(Slide).where(Slide.status != MISSING)):
            if not Path(row.path).exists():
                row.status, row.reason = MISSING, f"file not found: {row.path}"
                missing.append(row.name)
        for row in session.scalars(select(Slide).where(Slide.status == MISSING)):
            if Path(row.path).exists():
                if row.thumbnail_path and _another_file(row):
                    row.status, row.reason = FAILED, ("the file back at this path is not the one catalogued (its "
                                                      "content differs): run `wsireview add` on it")
                else:
                    row.status, row.reason = (READY if row.thumbnail_path else FAILED), None
    return missing


def _another_file(row: Slide) -> bool:
    """Whether the file now at a slide's path is, by its bytes, not the one it was catalogued from."""
    from wsireview.slides.reader import file_still_matches

    try:
        return file_still_matches(row.content_hash, Path(row.path)) is False
    except OSError:
        return True
