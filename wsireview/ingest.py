"""`add`: bring slides into the catalog with a thumbnail, a tissue mask and a patch grid.

Each file is handled on its own and committed on its own, so a bad file never stops a batch and
an interruption never loses slides already done.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import delete, select

from wsireview.catalog import FAILED, MISSING, READY, Catalog, Patch, Slide
from wsireview.learn.labels import record_label, similar_labels
from wsireview.slides.reader import Slide as SlideFile
from wsireview.slides.reader import DEFAULT_PATCH_SIZE, DEFAULT_TARGET_MPP, SlideError, explain_open_error, file_hash
from wsireview.slides.tiling import patch_grid
from wsireview.slides.tissue import tissue_mask, tissue_overlay
from wsireview.status import mark_missing
from wsireview.workspace import Workspace

# What a folder scan picks up. Files named explicitly are always tried, whatever their suffix.
SLIDE_SUFFIXES = {
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
    ".czi", ".png", ".jpg", ".jpeg", ".bmp",
}
THUMBNAIL_SIDE = 1024
DEFAULT_MIN_TISSUE = 0.5


@dataclass
class IngestResult:
    """What happened to one file."""

    path: Path
    outcome: str  # added, unchanged, moved, duplicate, failed
    slide_id: int | None = None
    reason: str | None = None
    warning: str | None = None
    patches: int = 0
    tissue_fraction: float | None = None
    seconds: float = 0.0


@dataclass
class IngestReport:
    results: list[IngestResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    labels_applied: int = 0
    unmatched_labels: list[tuple[int, str, str]] = field(default_factory=list)  # (line, slide, label)
    empty_labels: list[tuple[int, str]] = field(default_factory=list)  # (line, slide): no label, row skipped
    similar_labels: list[tuple[str, ...]] = field(default_factory=list)  # spellings differing by case/spaces

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def failed(self) -> int:
        return self.count("failed")


# -- finding files --------------------------------------------------------------------------------

def discover(paths: list[Path], recursive: bool = False) -> list[Path]:
    """The slide files named or contained in ``paths``, in a stable order, each once.

    A DICOM slide is a folder of ``.dcm`` files: one file per folder stands for it.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                p for p in sorted(path.glob(pattern))
                if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES and not p.name.startswith(".")
            )
        else:
            found.append(path)
    seen_dicom_dirs: set[Path] = set()
    unique: list[Path] = []
    seen: set[Path] = set()
    for path in found:
        resolved = path.resolve()
        if resolved.suffix.lower() == ".dcm":
            if resolved.parent in seen_dicom_dirs:
                continue
            seen_dicom_dirs.add(resolved.parent)
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique


# -- one slide ------------------------------------------------------------------------------------

@dataclass
class _Processed:
    """Everything computed from a readable slide file, before it touches the catalog."""

    meta: dict
    thumbnail: Image.Image
    mask: np.ndarray
    patches: list[tuple[int, int, float]]
    warning: str | None


def _process(slide: SlideFile, patch_size: int, target_mpp: float, min_tissue: float) -> _Processed:
    thumb = slide.thumbnail(THUMBNAIL_SIDE)
    rgb = np.asarray(thumb)
    mask = tissue_mask(rgb)
    resolution = slide.resolution(patch_size, target_mpp)
    patches = patch_grid(mask, slide.dimensions, resolution.level0_size, min_tissue)
    # The thumbnail comes from a coarse level; make sure level-0 pixels read too (first, middle, last patch).
    for x, y, _ in patches[:1] + patches[len(patches) // 2 : len(patches) // 2 + 1] + patches[-1:]:
        slide.read_region(x, y, resolution.level0_size, min(patch_size, resolution.level0_size))
    warnings = []
    if resolution.source != "mpp":
        warnings.append(f"patch size from {resolution.source}" + (f": {resolution.note}" if resolution.note else ""))
    if not mask.any():
        warnings.append("no tissue detected")
    elif min(slide.dimensions) < resolution.level0_size:
        warnings.append(
            f"slide ({slide.dimensions[0]} x {slide.dimensions[1]} px) is smaller than one patch "
            f"({resolution.level0_size} px at level 0)"
        )
    elif not patches:
        where = (f"{resolution.level0_size} px patch of level-0 pixels" if resolution.source == "level0-pixels"
                 else f"{patch_size} px patch at {target_mpp} µm/px")
        warnings.append(f"no {where} is {min_tissue:.0%} tissue")
    meta = dict(
        vendor=slide.vendor,
        width=slide.dimensions[0],
        height=slide.dimensions[1],
        level_count=slide.level_count,
        level_downsamples=list(slide.level_downsamples),
        mpp_x=slide.mpp_x,
        mpp_y=slide.mpp_y,
        objective_power=slide.objective_power,
        resolution_source=resolution.source,
        target_mpp=target_mpp,
        patch_size_px=patch_size,
        patch_size_level0=resolution.level0_size,
        tissue_fraction=float(mask.mean()),
    )
    return _Processed(meta, thumb, mask, patches, "; ".join(warnings) or None)


def _write_images(workspace: Workspace, slide_id: int, processed: _Processed) -> dict:
    thumb_path = workspace.thumbs / f"slide-{slide_id}.png"
    mask_path = workspace.masks / f"slide-{slide_id}.png"
    overlay_path = workspace.masks / f"slide-{slide_id}-overlay.png"
    processed.thumbnail.save(thumb_path)
    Image.fromarray(processed.mask.astype(np.uint8) * 255).save(mask_path)
    Image.fromarray(tissue_overlay(np.asarray(processed.thumbnail), processed.mask)).save(overlay_path)
    return dict(
        thumbnail_path=workspace.relative(thumb_path),
        mask_path=workspace.relative(mask_path),
        overlay_path=workspace.relative(overlay_path),
    )


def _fail(session, row: Slide | None, path: Path, content_hash: str | None, reason: str) -> Slide:
    if row is None:
        row = Slide(name=path.name, path=str(path))
        session.add(row)
    row.status, row.reason, row.content_hash = FAILED, reason, content_hash
    row.warning = None
    session.execute(delete(Patch).where(Patch.slide_id == row.id)) if row.id else None
    session.flush()
    return row


def ingest_file(
    catalog: Catalog,
    workspace: Workspace,
    path: Path,
    patch_size: int = DEFAULT_PATCH_SIZE,
    target_mpp: float = DEFAULT_TARGET_MPP,
    min_tissue: float = DEFAULT_MIN_TISSUE,
) -> IngestResult:
    """Add one file: new, unchanged, moved (same content elsewhere), duplicate, or failed."""
    started = time.perf_counter()
    path = Path(path).resolve()
    result = IngestResult(path=path, outcome="failed")
    try:
        slide = SlideFile(path)
    except SlideError as error:
        content_hash = file_hash(path) if path.is_file() else None
        with catalog.session() as session:
            row = session.scalar(select(Slide).where(Slide.path == str(path)))
            row = _fail(session, row, path, content_hash, str(error))
            result.slide_id, result.reason = row.id, str(error)
        result.seconds = time.perf_counter() - started
        return result

    with slide:
        content_hash = slide.content_hash()
        with catalog.session() as session:
            row = session.scalar(select(Slide).where(Slide.path == str(path)))
            if row is not None and row.status == READY and row.content_hash == content_hash:
                result.outcome, result.slide_id = "unchanged", row.id
                result.patches = _patch_count(session, row.id)
                result.tissue_fraction, result.warning = row.tissue_fraction, row.warning
                return result
            if row is None:
                twin = session.scalars(
                    select(Slide).where(Slide.content_hash == content_hash, Slide.status != FAILED)
                ).first()
                if twin is not None:
                    if Path(twin.path).exists() and twin.status != MISSING:
                        result.outcome, result.slide_id = "duplicate", twin.id
                        result.reason = f"same content as {twin.path}"
                        return result
                    twin.path, twin.name, twin.status, twin.reason = str(path), path.name, READY, None
                    result.outcome, result.slide_id = "moved", twin.id
                    result.patches = _patch_count(session, twin.id)
                    result.tissue_fraction = twin.tissue_fraction
                    return result

        try:
            processed = _process(slide, patch_size, target_mpp, min_tissue)
        except SlideError as error:
            with catalog.session() as session:
                row = session.scalar(select(Slide).where(Slide.path == str(path)))
                row = _fail(session, row, path, content_hash, str(error))
                result.slide_id, result.reason = row.id, str(error)
            result.seconds = time.perf_counter() - started
            return result

    with catalog.session() as session:
        row = session.scalar(select(Slide).where(Slide.path == str(path)))
        if row is None:
            row = Slide(name=path.name, path=str(path))
            session.add(row)
        else:
            session.execute(delete(Patch).where(Patch.slide_id == row.id))
        for key, value in processed.meta.items():
            setattr(row, key, value)
        row.content_hash, row.status, row.reason, row.warning = content_hash, READY, None, processed.warning
        session.flush()
        for key, value in _write_images(workspace, row.id, processed).items():
            setattr(row, key, value)
        size0 = processed.meta["patch_size_level0"]
        if processed.patches:
            session.execute(
                Patch.__table__.insert(),
                [dict(slide_id=row.id, x=x, y=y, size=size0, tissue_fraction=f) for x, y, f in processed.patches],
            )
        result.outcome, result.slide_id = "added", row.id
    result.patches = len(processed.patches)
    result.tissue_fraction = processed.meta["tissue_fraction"]
    result.warning = processed.warning
    result.seconds = time.perf_counter() - started
    return result


def _patch_count(session, slide_id: int) -> int:
    from sqlalchemy import func

    return session.scalar(select(func.count()).select_from(Patch).where(Patch.slide_id == slide_id)) or 0


# -- the catalog as a whole -----------------------------------------------------------------------

class LabelsError(ValueError):
    """A labels CSV that is not ``slide,label`` rows: refused as a whole, before anything is ingested."""


def read_labels(csv_path: Path) -> list[tuple[int, str, str]]:
    """Rows ``(line, slide, label)`` of a labels CSV: slide file name or path, label; header optional.

    A row's label may be empty (the caller skips it with a warning); a row with one column, or
    a header naming the columns in the other order, refuses the file: a semicolon-separated or
    swapped file would otherwise be read as nothing but unmatched rows.
    """
    rows = []
    first = True
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for line, record in enumerate(csv.reader(handle), start=1):
            cells = [cell.strip() for cell in record]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) < 2:
                separator = " (semicolon-separated? save it with commas)" if ";" in cells[0] else ""
                raise LabelsError(f"{csv_path}:{line}: expected two comma-separated columns slide,label, "
                                  f"got {record[0]!r}{separator}")
            slide, label = cells[0], cells[1]
            if first and slide.lower() == "label":
                raise LabelsError(f"{csv_path}:{line}: the header puts the label first; the columns must be slide,label")
            if first and (label.lower() == "label" or slide.lower() == "slide"):
                first = False
                continue  # header
            first = False
            rows.append((line, slide, label))
    return rows


def apply_labels(
    catalog: Catalog, rows: list[tuple[int, str, str]], base: Path, report: IngestReport, set_by: str = "csv"
) -> None:
    """Set slide labels from labels CSV rows (``base``: the CSV's folder, for relative paths), each
    recorded as set by ``set_by`` (``csv:<file name>``).

    Fills the report: labels applied, rows matching no slide, rows without a label (skipped: an
    empty cell never erases a label) and label spellings that differ only by case or spaces.
    """
    with catalog.session() as session:
        slides = session.scalars(select(Slide)).all()
        by_path = {s.path: s for s in slides}
        by_name: dict[str, list[Slide]] = {}
        for s in slides:
            by_name.setdefault(s.name, []).append(s)
            by_name.setdefault(Path(s.name).stem, []).append(s)
        for line, key, label in rows:
            if not label:
                report.empty_labels.append((line, key))
                continue
            candidate = Path(key) if Path(key).is_absolute() else base / key
            matches = [by_path[str(candidate.resolve())]] if str(candidate.resolve()) in by_path else by_name.get(key, [])
            if not matches:
                report.unmatched_labels.append((line, key, label))
                continue
            for s in matches:
                if s.label != label.strip():  # unchanged: keep who set it and when
                    record_label(s, label, set_by)
                report.labels_applied += 1
        session.flush()
        report.similar_labels = similar_labels({s.label for s in slides if s.label})


def add_paths(
    catalog: Catalog,
    workspace: Workspace,
    paths: list[Path],
    recursive: bool = False,
    labels_csv: Path | None = None,
    patch_size: int = DEFAULT_PATCH_SIZE,
    target_mpp: float = DEFAULT_TARGET_MPP,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    progress: bool = False,
    console: Console | None = None,
) -> IngestReport:
    """Ingest every slide in ``paths``; then mark vanished files missing and apply labels.

    The labels CSV is read first: a malformed one raises :class:`LabelsError` before any slide is ingested.
    """
    label_rows = read_labels(Path(labels_csv)) if labels_csv is not None else None
    workspace.ensure()
    report = IngestReport()
    files = discover(list(paths), recursive=recursive)
    columns = (TextColumn("[bold]adding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=console or Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("", total=len(files))
        for path in files:
            bar.update(task, description=path.name)
            try:
                result = ingest_file(catalog, workspace, path, patch_size, target_mpp, min_tissue)
            except Exception as error:  # never let one file stop the batch
                result = IngestResult(path=path, outcome="failed", reason=explain_open_error(path, error))
                with catalog.session() as session:
                    row = session.scalar(select(Slide).where(Slide.path == str(path)))
                    _fail(session, row, path, None, result.reason)
            report.results.append(result)
            bar.advance(task)
    report.missing = mark_missing(catalog)
    if label_rows is not None:
        apply_labels(catalog, label_rows, Path(labels_csv).resolve().parent, report, f"csv:{Path(labels_csv).name}")
    return report
