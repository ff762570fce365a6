"""DICOM whole-slide images: a slide is a series (one file per pyramid level), named by its UID.

OpenSlide opens a series from any one of its files and finds the others in the same folder, so
ingest picks one file per Series Instance UID, the one holding the full-resolution level; two
series in one folder are two slides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeriesMember:
    series_uid: str
    pixels: int  # TotalPixelMatrixColumns x Rows: the level this file holds
    is_volume: bool  # a pyramid level, not a label or overview image


def series_member(path: Path) -> SeriesMember | None:
    """What a DICOM file's header says about its place in a series, or None (no UID, not DICOM)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
            "SeriesInstanceUID", "TotalPixelMatrixColumns", "TotalPixelMatrixRows", "ImageType"])
        uid = header.get("SeriesInstanceUID")
        pixels = int(header.get("TotalPixelMatrixColumns") or 0) * int(header.get("TotalPixelMatrixRows") or 0)
        image_type = [str(v).upper() for v in (header.get("ImageType") or [])]
    except Exception:  # not DICOM, truncated, unreadable: the reader will say why
        return None
    return SeriesMember(str(uid), pixels, "VOLUME" in image_type) if uid else None


def dicom_series_files(paths: list[Path]) -> list[Path]:
    """One file for each DICOM series among ``paths`` (its full-resolution level); files without a
    readable series UID each stand for themselves. Order follows ``paths``."""
    best: dict[tuple[Path, str], tuple[tuple[bool, int], Path]] = {}
    alone: list[Path] = []
    for path in paths:
        member = series_member(path)
        if member is None:
            alone.append(path)
            continue
        key, rank = (path.parent, member.series_uid), (member.is_volume, member.pixels)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, path)
    keep = {path for _, path in best.values()} | set(alone)
    return [p for p in paths if p in keep]
