"""DICOM whole-slide images: a slide is a series (one file per pyramid level), named by its UID.

OpenSlide opens a series from any one of its files and finds the others in the same folder, so
ingest picks one file per Series Instance UID; two series in one folder are two slides.
"""

from __future__ import annotations

from pathlib import Path


def series_uid(path: Path) -> str | None:
    """The Series Instance UID in a DICOM file's header, or None when it has none (or is not DICOM)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        uid = header.get("SeriesInstanceUID")
    except Exception:  # not DICOM, truncated, unreadable: the reader will say why
        return None
    return str(uid) if uid else None


def dicom_series_files(paths: list[Path]) -> list[Path]:
    """One file for each DICOM series among ``paths`` (the first in order); files without a
    readable series UID each stand for themselves."""
    chosen: dict[tuple[Path, str], Path] = {}
    alone: list[Path] = []
    for path in paths:
        uid = series_uid(path)
        if uid is None:
            alone.append(path)
        else:
            chosen.setdefault((path.parent, uid), path)
    keep = set(chosen.values()) | set(alone)
    return [p for p in paths if p in keep]
