"""`run_export`: select, place, write one format into a temporary folder, rename it into place."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from wsireview.catalog import Catalog, Slide
from wsireview.export import clam_h5, imagefolder, qupath
from wsireview.export.atomic import ExportError, atomic_dir, check_target
from wsireview.export.manifest import write_manifest
from wsireview.export.plan import ExportPatch, build_plan
from wsireview.export.selection import DROP_UNREADABLE, Selection, select_patches
from wsireview.errors import WsireviewError
from wsireview.files import is_disk_full
from wsireview.progress import ProgressCallback
from wsireview.status import mark_unreadable
from wsireview.workspace import Workspace

FORMATS = ("imagefolder", "qupath", "clam-h5", "csv")
SUMMARY_FILE = "export.json"


class ExportDiskFull(WsireviewError):
    """The disk ran full while an export was written: nothing was left at OUT."""


@dataclass(frozen=True)
class ExportOptions:
    format: str = "imagefolder"
    selection: Selection = field(default_factory=Selection)
    patch_size: int | None = None
    mpp: float | None = None
    anonymize: bool = False
    force: bool = False
    object_type: str = "detection"  # qupath only

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"unknown export format {self.format!r}: choose {', '.join(FORMATS)}")
        if self.patch_size is not None and self.patch_size < 8:
            raise ExportError(f"an exported patch must be at least 8 px a side, not {self.patch_size}")
        if self.mpp is not None and self.mpp <= 0:
            raise ExportError(f"an export resolution must be a positive number of µm per pixel, not {self.mpp:g}")
        if self.object_type not in qupath.OBJECT_TYPES:
            raise ExportError(f"unknown QuPath object type {self.object_type!r}: choose {', '.join(qupath.OBJECT_TYPES)}")


@dataclass
class ExportReport:
    out: Path
    format: str
    patches: list[ExportPatch] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    reviewed: int = 0
    files: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # slide name -> reason (now marked failed)

    @property
    def per_label(self) -> Counter:
        return Counter(p.item.label for p in self.patches)

    @property
    def per_slide(self) -> dict[str, Counter]:
        table: dict[str, Counter] = {}
        for p in self.patches:
            table.setdefault(p.slide.name, Counter())[p.item.label] += 1
        return table

    def summary(self, options: ExportOptions) -> dict:
        """The provenance written to ``export.json`` (slide names only as they appear in the output)."""
        sel = options.selection
        from wsireview import __version__

        return {
            "tool": f"wsireview {__version__}",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "format": self.format,
            "options": {
                "consensus": sel.consensus, "labels": list(sel.labels or []), "reviewers": list(sel.reviewers or []),
                "since": sel.since.isoformat() if sel.since else None, "include_unsure": sel.include_unsure,
                "patch_size": options.patch_size, "mpp": options.mpp, "anonymize": options.anonymize,
            },
            "reviewed_patches": self.reviewed,
            "exported_patches": len(self.patches),
            "dropped": dict(self.dropped),
            "per_label": dict(self.per_label),
            "per_slide": {name: dict(c) for name, c in self.per_slide.items()},
        }


def _protected(catalog: Catalog, workspace: Workspace) -> list[Path]:
    """Folders `--force` must never replace: the workspace and every slide's folder."""
    with catalog.session() as session:
        paths = session.scalars(select(Slide.path)).all()
    return [workspace.root, *{Path(p).parent for p in paths if p}]


def run_export(catalog: Catalog, workspace: Workspace, out: Path, options: ExportOptions,
               on_progress: ProgressCallback | None = None) -> ExportReport:
    """Export the labeled patches to ``out``; raises ExportError when OUT cannot be written and
    :class:`ExportDiskFull` when the disk fills meanwhile (OUT is then left as it was).

    A slide whose pixels cannot be read is skipped, listed in the report's ``unreadable`` and marked
    failed in the catalog (missing when its file has gone), the rest is exported.
    ``on_progress`` hears the patches written so far.
    """
    try:
        return _run_export(catalog, workspace, Path(out), options, on_progress)
    except Exception as error:  # a file write (OSError) or the catalog's (SQLite: "database or disk is full")
        if not is_disk_full(error):
            raise
        why = error.strerror if isinstance(error, OSError) and error.strerror else "no space left on the device"
        raise ExportDiskFull(f"disk full: the export to {Path(out).absolute()} could not be written ({why}); "
                             "nothing was left at OUT: free space and re-run") from error


def _run_export(catalog: Catalog, workspace: Workspace, out: Path, options: ExportOptions,
                on_progress: ProgressCallback | None) -> ExportReport:
    protected = _protected(catalog, workspace)
    check_target(out, options.force, protected)  # fail before any slide is read
    chosen = select_patches(catalog, options.selection)
    plan = build_plan(catalog, workspace, chosen.patches, anonymize=options.anonymize,
                      patch_size=options.patch_size, mpp=options.mpp)
    report = ExportReport(out=out.absolute(), format=options.format, dropped=chosen.dropped, reviewed=chosen.reviewed)
    total = len(plan.patches)
    written = [0]

    def advance(n: int) -> None:
        written[0] += n
        if on_progress is not None:
            on_progress(f"export {options.format}: {written[0]:,} of {total:,} patches", written[0] / max(total, 1))

    with atomic_dir(out, options.force, protected) as tmp:
        advance(0)
        patches = plan.patches
        if options.format == "imagefolder":
            patches, unreadable = imagefolder.write(tmp, plan, advance)
            report.unreadable = {plan.slides[sid].name: why for sid, why in unreadable.items()}
            for sid, why in unreadable.items():
                mark_unreadable(catalog, sid, f"unreadable while exporting: {why}")
            lost = len(plan.patches) - len(patches)
            if lost:
                report.dropped[DROP_UNREADABLE] += lost
            report.files += len(patches)
        elif options.format == "qupath":
            report.files += len(qupath.write(tmp, plan, advance, options.object_type))
        elif options.format == "clam-h5":
            report.files += len(clam_h5.write(tmp, plan, advance))
        else:
            advance(len(patches))
        report.patches = patches
        write_manifest(tmp, patches)
        (tmp / SUMMARY_FILE).write_text(json.dumps(report.summary(options), indent=2), encoding="utf-8")
        report.files += 2
    return report
