"""`add`: bring slides into the catalog with a thumbnail, a tissue mask and a patch grid.

Each file is handled on its own and committed on its own, so a bad file never stops a batch and
an interruption never loses slides already done.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import delete, func, select

from wsireview.catalog import FAILED, MISSING, READY, Catalog, FeatureSet, Patch, Review, Slide, SlidePrediction
from wsireview.errors import WsireviewError
from wsireview.files import is_disk_full
from wsireview.learn.labels import record_label, similar_labels
from wsireview.slides import examine as examine_jobs
from wsireview.slides.dicom import dicom_series_files
from wsireview.slides.examine import THUMBNAIL_SIDE, Examined, GridOptions, Identity
from wsireview.slides.integrity import sample_indices
from wsireview.slides.isolated import InlinePool, JobFailed, ReaderLimits, ReaderPool
from wsireview.slides.reader import DEFAULT_PATCH_SIZE, DEFAULT_TARGET_MPP, explain_open_error, same_content
from wsireview.slides.tissue import tissue_overlay
from wsireview.progress import ProgressCallback
from wsireview.status import mark_missing
from wsireview.text import printable
from wsireview.workspace import Workspace

# What a folder scan picks up. Files named explicitly are always tried, whatever their suffix.
SLIDE_SUFFIXES = {
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm",
    ".czi", ".png", ".jpg", ".jpeg", ".bmp",
}
DEFAULT_MIN_TISSUE = 0.5

# What `add` did with one file (IngestResult.outcome), in the order reports list them.
ADDED, UNCHANGED, MOVED, DUPLICATE = "added", "unchanged", "moved", "duplicate"
OUTCOMES = (ADDED, UNCHANGED, MOVED, DUPLICATE, FAILED)
CATALOGUED = (ADDED, UNCHANGED, MOVED)  # the file is a slide of the catalog now
__all__ = ["THUMBNAIL_SIDE", "add_paths", "discover", "ingest_file", "ingest_files"]


@dataclass
class IngestResult:
    """What happened to one file."""

    path: Path
    outcome: str  # one of OUTCOMES
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
        return self.count(FAILED)


# -- finding files --------------------------------------------------------------------------------

def discover(paths: list[Path], recursive: bool = False) -> list[Path]:
    """The slide files named or contained in ``paths``, in a stable order, each once.

    A DICOM slide is a series of ``.dcm`` files (one per pyramid level): one file per Series
    Instance UID stands for it, so two series in one folder are two slides.
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
    unique = list(dict.fromkeys(path.resolve() for path in found))
    dicom = [p for p in unique if p.suffix.lower() == ".dcm"]
    if not dicom:
        return unique
    keep = set(dicom_series_files(dicom))
    return [p for p in unique if p.suffix.lower() != ".dcm" or p in keep]


# -- one slide ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlideJobs:
    """The reader jobs ingest runs in worker processes; a test swaps in doubles with the same signatures."""

    identify: Callable = examine_jobs.identify
    examine: Callable = examine_jobs.examine
    verify: Callable = examine_jobs.verify


def grid_description(patch_size: int | None, target_mpp: float | None, min_tissue: float | None) -> str:
    tissue = "?" if min_tissue is None else f"{min_tissue:.0%}"
    return f"{patch_size} px at {target_mpp} µm/px, {tissue} tissue"


def grid_matches(row: Slide, options: GridOptions) -> bool:
    """Whether a slide's recorded grid was cut with these options (an unrecorded min tissue is the default)."""
    recorded_min = row.min_tissue if row.min_tissue is not None else DEFAULT_MIN_TISSUE
    return (row.patch_size_px == options.patch_size and row.target_mpp is not None
            and abs(row.target_mpp - options.target_mpp) < 1e-9 and abs(recorded_min - options.min_tissue) < 1e-9)


def _write_images(workspace: Workspace, slide_id: int, examined: Examined) -> dict:
    thumb_path = workspace.thumbs / f"slide-{slide_id}.png"
    mask_path = workspace.masks / f"slide-{slide_id}.png"
    overlay_path = workspace.masks / f"slide-{slide_id}-overlay.png"
    examined.thumbnail.save(thumb_path)
    Image.fromarray(examined.mask.astype(np.uint8) * 255).save(mask_path)
    Image.fromarray(tissue_overlay(np.asarray(examined.thumbnail), examined.mask)).save(overlay_path)
    return dict(
        thumbnail_path=workspace.relative(thumb_path),
        mask_path=workspace.relative(mask_path),
        overlay_path=workspace.relative(overlay_path),
    )


def _fail(session, row: Slide | None, path: Path, content_hash: str | None, reason: str) -> Slide:
    """Record a slide as failed. Its patches (and their reviews) stay: a file that failed to read
    today may be a good one tomorrow, and reviews are never deleted. A slide catalogued before keeps
    its content hash: the original file, put back, is recognised as it."""
    if row is None:
        row = Slide(name=path.name, path=str(path))
        session.add(row)
    row.status, row.reason = FAILED, reason
    if not (row.content_hash and row.thumbnail_path):  # a catalogued slide keeps the hash of the file it was cut from
        row.content_hash = content_hash or row.content_hash
    row.warning = None
    session.flush()
    return row


def record_failure(catalog: Catalog, path: Path, reason: str, content_hash: str | None = None) -> int:
    """Mark the slide at ``path`` failed with ``reason`` (adding its row if new); its id."""
    with catalog.session() as session:
        row = session.scalar(select(Slide).where(Slide.path == str(path)))
        return _fail(session, row, path, content_hash, reason).id


class WorkspaceFull(OSError):
    """The workspace's disk is full: the batch stops (the slides are fine; nothing can be written)."""


class GridConflict(WsireviewError):
    """A new grid would drop patches that carry reviews."""


def store_grid(session, workspace: Workspace, slide: Slide, patches: list[tuple[int, int, float]], size0: int) -> bool:
    """Make ``patches`` the slide's grid. Patches on unchanged squares keep their ids (and reviews,
    scores, features); the others go. Raises :class:`GridConflict` instead of deleting a reviewed
    patch. Returns whether the grid changed (its feature sets are then dropped, to be embedded again)."""
    existing = {(p.x, p.y, p.size): p for p in session.scalars(select(Patch).where(Patch.slide_id == slide.id))}
    wanted = {(x, y, size0): fraction for x, y, fraction in patches}
    obsolete = [p.id for key, p in existing.items() if key not in wanted]
    if obsolete:
        reviewed = session.scalar(select(func.count(func.distinct(Review.patch_id))).where(Review.patch_id.in_(obsolete)))
        if reviewed:
            raise GridConflict(f"{reviewed} reviewed patch{'es' if reviewed != 1 else ''} would leave the grid")
        for chunk in range(0, len(obsolete), 10_000):
            session.execute(delete(Patch).where(Patch.id.in_(obsolete[chunk:chunk + 10_000])))
    for key, patch in existing.items():
        if key in wanted:
            patch.tissue_fraction = wanted[key]
    new = [dict(slide_id=slide.id, x=x, y=y, size=size, tissue_fraction=f)
           for (x, y, size), f in wanted.items() if (x, y, size) not in existing]
    if new:
        table = Patch.metadata.tables[Patch.__tablename__]  # the Table itself: a Core bulk insert
        session.execute(table.insert(), new)
    slide.patch_count = len(wanted)  # the grid is now exactly ``wanted``
    changed = bool(obsolete or new)
    if changed:
        for feature_set in session.scalars(select(FeatureSet).where(FeatureSet.slide_id == slide.id)):
            stale = workspace.absolute(feature_set.path)
            if stale is not None and stale.exists():
                stale.unlink()
            session.delete(feature_set)
    return changed


def _store_examined(catalog: Catalog, workspace: Workspace, path: Path, content_hash: str, examined: Examined,
                    result: IngestResult) -> None:
    with catalog.session() as session:
        row = session.scalar(select(Slide).where(Slide.path == str(path)))
        if row is None:
            row = Slide(name=path.name, path=str(path))
            session.add(row)
            session.flush()
        try:
            with session.begin_nested():
                store_grid(session, workspace, row, examined.patches, examined.meta["patch_size_level0"])
        except GridConflict as conflict:
            result.outcome, result.slide_id = UNCHANGED, row.id
            result.warning = (f"kept its grid ({grid_description(row.patch_size_px, row.target_mpp, row.min_tissue)}): "
                              f"{conflict}")
            result.patches = _patch_count(session, row.id)
            result.tissue_fraction = row.tissue_fraction
            return
        for key, value in examined.meta.items():
            setattr(row, key, value)
        row.content_hash, row.status, row.reason, row.warning = content_hash, READY, None, examined.warning
        session.flush()
        for key, value in _write_images(workspace, row.id, examined).items():
            setattr(row, key, value)
        result.outcome, result.slide_id = ADDED, row.id
    result.patches = len(examined.patches)
    result.tissue_fraction = examined.meta["tissue_fraction"]
    result.warning = examined.warning


def _twin(session, content_hash: str) -> Slide | None:
    """A usable slide with the same content (also one recorded with the older, shorter hash)."""
    legacy = content_hash.split("+", 1)[0]
    candidates = session.scalars(
        select(Slide).where(Slide.content_hash.in_([content_hash, legacy]), Slide.status != FAILED).order_by(Slide.id)
    ).all()
    return next((s for s in candidates if same_content(s.content_hash, content_hash)), None)


@dataclass
class _Step:
    """What the parent does next with a file after its identity is known."""

    job: str | None = None  # "examine" or "verify"; None when ``result`` is final
    args: tuple = ()
    twin_id: int | None = None
    note: str | None = None  # said with the file's result once it is stored


def _plan(catalog: Catalog, workspace: Workspace, path: Path, content_hash: str, options: GridOptions, retile: bool,
          result: IngestResult) -> _Step:
    """Decide from the catalog: unchanged, duplicate, moved (after a pixel check), replaced, or examine."""
    with catalog.session() as session:
        row = session.scalar(select(Slide).where(Slide.path == str(path)))
        if row is not None and row.content_hash and not same_content(row.content_hash, content_hash):
            return _replaced(session, workspace, row, result, options)
        if row is not None and row.status == READY and same_content(row.content_hash, content_hash):
            if grid_matches(row, options):
                return _unchanged(session, row, result)
            if retile:
                return _Step("examine", (path, options))
            _unchanged(session, row, result)
            result.warning = "; ".join(filter(None, [row.warning, (
                f"kept its grid ({grid_description(row.patch_size_px, row.target_mpp, row.min_tissue)}), not the "
                f"{grid_description(options.patch_size, options.target_mpp, options.min_tissue)} asked for: "
                "add --retile to cut a new grid")]))
            return _Step()
        if row is None and (twin := _twin(session, content_hash)) is not None:
            if Path(twin.path).exists() and twin.status != MISSING and _same_bytes(Path(twin.path), path):
                result.outcome, result.slide_id = DUPLICATE, twin.id
                result.reason = f"same content as {twin.path}"
                return _Step()
            if not Path(twin.path).exists() or twin.status == MISSING:
                positions = _sample_positions(session, twin.id)
                return _Step("verify", (path, positions, twin.patch_size_level0 or 1, twin.patch_size_px or 224),
                             twin_id=twin.id)
    return _Step("examine", (path, options))


def _replaced(session, workspace: Workspace, row: Slide, result: IngestResult, options: GridOptions) -> _Step:
    """The file at a catalogued slide's path is not the one catalogued (its content hash changed).

    Reviews sit at coordinates of the old file's pixels, so they must never move onto the new one
    silently. A slide with reviews keeps them and is failed with what to do (the original file put
    back is accepted again as it was); a slide without reviews is catalogued anew: its old patches,
    scores, features and label go, and the step's note says so.
    """
    path = Path(row.path)
    reviews = session.scalar(select(func.count()).select_from(Review).join(Patch, Review.patch_id == Patch.id)
                             .where(Patch.slide_id == row.id)) or 0
    if reviews:
        result.outcome, result.slide_id = FAILED, row.id
        result.reason = (f"not the file that was catalogued at this path (its content changed since it was added: "
                         f"a different slide, or a damaged copy): the slide's {reviews} review{'s' if reviews != 1 else ''} "
                         "belong to the original's pixels and stay with it; put the original file back, or give the "
                         "new file a path of its own to add it as a new slide")
        row.status, row.reason, row.warning = FAILED, result.reason, None  # its hash stays the original's
        return _Step()
    patches = _patch_count(session, row.id)
    if not patches and not row.label:
        return _Step("examine", (path, options))  # nothing of the old file was kept: examine it as any file
    for feature_set in session.scalars(select(FeatureSet).where(FeatureSet.slide_id == row.id)):
        stale = workspace.absolute(feature_set.path)
        if stale is not None and stale.exists():
            stale.unlink()
        session.delete(feature_set)
    session.execute(delete(SlidePrediction).where(SlidePrediction.slide_id == row.id))
    session.execute(delete(Patch).where(Patch.slide_id == row.id))
    label = f" and its label {row.label!r}" if row.label else ""
    row.label = row.label_set_by = row.label_set_at = None
    row.status, row.reason, row.content_hash = FAILED, "replaced by a different file: being examined again", None
    return _Step("examine", (path, options), note=(
        f"not the file that was catalogued at this path (its content changed): catalogued anew, the old "
        f"{patches} patch{'es' if patches != 1 else ''}{label} dropped (none had a review)"))


def _unchanged(session, row: Slide, result: IngestResult) -> _Step:
    result.outcome, result.slide_id = UNCHANGED, row.id
    result.patches = _patch_count(session, row.id)
    result.tissue_fraction, result.warning = row.tissue_fraction, row.warning
    return _Step()


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (read in full: only for files whose hashes agree)."""
    import filecmp

    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _sample_positions(session, slide_id: int) -> list[tuple[int, int]]:
    rows = session.execute(select(Patch.x, Patch.y).where(Patch.slide_id == slide_id).order_by(Patch.y, Patch.x)).all()
    return [tuple(rows[i]) for i in sample_indices(len(rows))]


def _accept_moved(catalog: Catalog, path: Path, twin_id: int, result: IngestResult) -> None:
    with catalog.session() as session:
        twin = session.get_one(Slide, twin_id)
        twin.path, twin.name, twin.status, twin.reason = str(path), path.name, READY, None
        result.outcome, result.slide_id = MOVED, twin.id
        result.patches = _patch_count(session, twin.id)
        result.tissue_fraction = twin.tissue_fraction


def _patch_count(session, slide_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Patch).where(Patch.slide_id == slide_id)) or 0


def ingest_files(
    catalog: Catalog,
    workspace: Workspace,
    files: list[Path],
    options: GridOptions,
    retile: bool = False,
    limits: ReaderLimits = ReaderLimits(),
    jobs: SlideJobs = SlideJobs(),
    on_result: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Ingest ``files``, each read in an isolated worker (see :mod:`wsireview.slides.isolated`).

    Every file ends with one result: added, unchanged, moved, duplicate or failed with the reason
    (a crash, a hang or running out of memory included); the catalog is written here, in this
    process, one file at a time. Results come back in the order of ``files``.
    """
    order = list(dict.fromkeys(Path(f).resolve() for f in files))
    started: dict[Path, float] = {}
    results: dict[Path, IngestResult] = {}
    hashes: dict[Path, str] = {}
    twins: dict[Path, int] = {}
    notes: dict[Path, str] = {}  # said with a file's result (a replaced file catalogued anew)
    # Workers finish in any order; the catalog is written in the order of ``files``, so slide ids
    # (and everything listed by id) are the same on every run.
    finished: dict[Path, tuple[str, object]] = {}
    written = 0

    def write(path: Path, stage: str, value: object) -> None:
        result = results[path]
        try:
            if isinstance(value, JobFailed):
                result.outcome, result.reason = FAILED, value.reason
                result.slide_id = record_failure(catalog, path, value.reason, hashes.get(path))
            elif stage == "examine":
                _store_examined(catalog, workspace, path, hashes[path], cast(Examined, value), result)
            elif stage == "verify":
                _accept_moved(catalog, path, twins[path], result)
        except Exception as error:  # a catalog or image write that failed: this file only
            if is_disk_full(error):  # not the slide's fault, and every slide after it would fail too
                raise WorkspaceFull(f"the disk holding the workspace {workspace.root} is full: free some space "
                                    "and run add again (slides done so far are kept)") from error
            result.outcome, result.reason = FAILED, explain_open_error(path, error)
            try:
                result.slide_id = record_failure(catalog, path, result.reason, hashes.get(path))
            except Exception:
                pass
        if path in notes and result.outcome != FAILED:
            result.warning = "; ".join(filter(None, [notes[path], result.warning]))
        result.seconds = time.perf_counter() - started[path]
        if on_result is not None:
            on_result(result)

    pool = InlinePool() if limits.workers == 0 else ReaderPool(limits)
    with pool:
        for path in order:
            started[path] = time.perf_counter()
            results[path] = IngestResult(path=path, outcome=FAILED)
            pool.submit(("identify", path), jobs.identify, path)
        for key, value in pool.results():
            stage, path = cast("tuple[str, Path]", key)  # as submitted above
            if stage == "identify" and not isinstance(value, JobFailed):
                identity = cast(Identity, value)  # what the identify job returns
                hashes[path] = identity.content_hash
                try:
                    step = _plan(catalog, workspace, path, identity.content_hash, options, retile, results[path])
                except Exception as error:
                    value = JobFailed(explain_open_error(path, error))
                else:
                    if step.job is not None:
                        if step.twin_id is not None:  # the slide a "verify" job checks against
                            twins[path] = step.twin_id
                        if step.note:
                            notes[path] = step.note
                        pool.submit((step.job, path), getattr(jobs, step.job), *step.args)
                        continue
            finished[path] = (stage, value)
            while written < len(order) and order[written] in finished:
                write(order[written], *finished.pop(order[written]))
                written += 1
    return [results[path] for path in order]


class UnknownSlides(WsireviewError):
    """Slides named for re-tiling that the catalog does not hold."""


def retile_slides(
    catalog: Catalog,
    workspace: Workspace,
    names: list[str],
    options: GridOptions,
    limits: ReaderLimits = ReaderLimits(),
    jobs: SlideJobs = SlideJobs(),
    on_result: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Cut a new patch grid for catalog slides named by name or path (every ready slide when
    ``names`` is empty): exactly what ``add --retile`` does to them, so unchanged squares keep their
    ids, features and reviews, and a grid that would drop reviewed patches is refused for that slide."""
    with catalog.session() as session:
        if names:
            rows = session.scalars(select(Slide).where(Slide.name.in_(names) | Slide.path.in_(names))).all()
            unknown = sorted(set(names) - {r.name for r in rows} - {r.path for r in rows})
            if unknown:
                raise UnknownSlides(f"not in the catalog: {', '.join(map(printable, unknown))}: "
                                    "name slides as `wsireview status` lists them")
        else:
            rows = session.scalars(select(Slide).where(Slide.status == READY).order_by(Slide.id)).all()
        paths = [Path(r.path) for r in sorted(rows, key=lambda r: r.id)]
    workspace.ensure()
    return ingest_files(catalog, workspace, paths, options, retile=True, limits=limits, jobs=jobs,
                        on_result=on_result)


def ingest_file(
    catalog: Catalog,
    workspace: Workspace,
    path: Path,
    patch_size: int = DEFAULT_PATCH_SIZE,
    target_mpp: float = DEFAULT_TARGET_MPP,
    min_tissue: float = DEFAULT_MIN_TISSUE,
    limits: ReaderLimits = ReaderLimits(workers=1),
) -> IngestResult:
    """Add one file: new, unchanged, moved (same content elsewhere), duplicate, or failed."""
    return ingest_files(catalog, workspace, [path], GridOptions(patch_size, target_mpp, min_tissue), limits=limits)[0]


# -- the catalog as a whole -----------------------------------------------------------------------

class LabelsError(WsireviewError, ValueError):
    """A labels CSV that is not ``slide,label`` rows: refused as a whole, before anything is ingested."""


def read_labels(csv_path: Path) -> list[tuple[int, str, str]]:
    """Rows ``(line, slide, label)`` of a labels CSV: slide file name or path, label; header optional.

    A row's label may be empty (the caller skips it with a warning); a row with one column, or
    a header naming the columns in the other order, refuses the file: a semicolon-separated or
    swapped file would otherwise be read as nothing but unmatched rows.
    """
    try:
        return _read_label_rows(csv_path)
    except UnicodeDecodeError as error:
        raise LabelsError(f"{csv_path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start}): "
                          "save it as a UTF-8 CSV") from error
    except csv.Error as error:
        raise LabelsError(f"{csv_path}: not a CSV text file ({error})") from error


def _read_label_rows(csv_path: Path) -> list[tuple[int, str, str]]:
    rows = []
    first = True
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        text = handle.read()
    if "\x00" in text:
        raise csv.Error("it holds NUL bytes: a binary file")
    for line, record in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
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
    retile: bool = False,
    limits: ReaderLimits = ReaderLimits(),
    jobs: SlideJobs = SlideJobs(),
    on_progress: ProgressCallback | None = None,
) -> IngestReport:
    """Ingest every slide in ``paths``; then mark vanished files missing and apply labels.

    The labels CSV is read first: a malformed one raises :class:`LabelsError` before any slide is ingested.
    A slide already in the catalog keeps its grid unless ``retile`` (its result then says so).
    ``on_progress`` hears each file as it is done (its name, the fraction of files done).
    """
    label_rows = read_labels(Path(labels_csv)) if labels_csv is not None else None
    workspace.ensure()
    report = IngestReport()
    files = discover(list(paths), recursive=recursive)
    done = 0

    def advance(result: IngestResult) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(f"{done} of {len(files)} files: {result.path.name}", done / len(files))

    report.results = ingest_files(catalog, workspace, files, GridOptions(patch_size, target_mpp, min_tissue),
                                  retile=retile, limits=limits, jobs=jobs, on_result=advance)
    report.missing = mark_missing(catalog)
    if label_rows is not None and labels_csv is not None:
        apply_labels(catalog, label_rows, Path(labels_csv).resolve().parent, report, f"csv:{Path(labels_csv).name}")
    return report
