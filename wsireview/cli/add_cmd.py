"""`wsireview add`: ingest slides (thumbnail, tissue mask, patch grid) and slide labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from wsireview.cli import SUBCOMMANDS, CommandError, print_error
from wsireview.cli.progress_bar import progress_bar
from wsireview.ingest import (
    ADDED,
    CATALOGUED,
    DEFAULT_MIN_TISSUE,
    DUPLICATE,
    FAILED,
    MOVED,
    OUTCOMES,
    UNCHANGED,
    LabelsError,
    WorkspaceFull,
    add_paths,
    discover,
    read_labels,
)
from wsireview.learn.labels import label_first_step, needs_labels
from wsireview.slides.isolated import DEFAULT_MEMORY_GB, DEFAULT_TIMEOUT_S, DEFAULT_WORKERS, ReaderLimits
from wsireview.slides.reader import DEFAULT_PATCH_SIZE, DEFAULT_TARGET_MPP
from wsireview.status import mixed_grids_warning, patch_grids
from wsireview.text import literal as safe_name

# Warnings about label rows are capped: a 100,000-row file should not print 100,000 lines.
MAX_LABEL_WARNINGS = 20


def add_grid_options(parser: argparse.ArgumentParser) -> None:
    """--patch-size, --mpp and --min-tissue: the patch grid options `add` and `retile` share."""
    parser.add_argument("--patch-size", type=int, default=DEFAULT_PATCH_SIZE, metavar="PX",
                        help=f"patch side in pixels at the target resolution (default {DEFAULT_PATCH_SIZE})")
    parser.add_argument("--mpp", type=float, default=DEFAULT_TARGET_MPP, metavar="UM",
                        help=f"target resolution in µm per pixel (default {DEFAULT_TARGET_MPP}, i.e. 20x)")
    parser.add_argument("--min-tissue", type=float, default=DEFAULT_MIN_TISSUE, metavar="SHARE",
                        help=f"keep a patch when at least this share of it is tissue (default {DEFAULT_MIN_TISSUE})")


def register(sub) -> None:
    parser = sub.add_parser(
        "add",
        help=SUBCOMMANDS["add"],
        description="Add slide files or folders to the catalog. Every format OpenSlide reads (SVS, "
        "tiled TIFF, NDPI, MRXS, SCN, DICOM, ...) and plain PNG/JPEG/TIFF images. Adding the same "
        "file again changes nothing; a moved file is recognised by its content (and its pixels checked); "
        "unreadable files are recorded as failed with the reason, and the exit code is 1 when any file failed. "
        "Each slide is read in a worker process with a time and memory limit, so a file that crashes or "
        "hangs the reader fails alone. A slide is ready only when a sample of its tissue patches reads back. "
        "A slide already in the catalog keeps its patch grid unless --retile is given.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="slide files or folders")
    parser.add_argument("-r", "--recursive", action="store_true", help="look into sub-folders too")
    parser.add_argument("--labels", type=Path, metavar="CSV",
                        help="CSV of slide-level labels: slide file name (or path), label; header optional")
    add_grid_options(parser)
    parser.add_argument("--retile", action="store_true",
                        help="cut a new patch grid for slides already in the catalog when --patch-size, --mpp or "
                        "--min-tissue differ from theirs (squares that stay keep their reviews and features; a grid "
                        "that would drop reviewed patches is refused)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                        help=f"slides read in parallel, each in its own process (default {DEFAULT_WORKERS}; "
                        "0 reads in this process, without isolation)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"fail a slide whose reading takes longer than this (default {DEFAULT_TIMEOUT_S:g} s)")
    parser.add_argument("--max-memory", type=float, default=DEFAULT_MEMORY_GB, metavar="GB",
                        help=f"memory each reader process may use (default {DEFAULT_MEMORY_GB:g} GB)")
    parser.add_argument("--json", action="store_true", help="print one JSON document (the catalog) instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx) -> int:
    if args.labels is not None and not args.labels.is_file():
        raise CommandError(f"labels file not found: {args.labels}", 2)
    if not 0 < args.min_tissue <= 1 or args.patch_size < 8 or args.mpp <= 0:
        raise CommandError("--min-tissue must be in (0, 1], --patch-size >= 8 and --mpp > 0", 2)
    if args.workers < 0 or args.timeout <= 0 or args.max_memory < 0.5:
        raise CommandError("--workers must be >= 0, --timeout > 0 and --max-memory >= 0.5 (GB)", 2)
    if args.labels is not None:
        try:
            read_labels(args.labels)  # refuse a malformed file before anything is ingested
        except LabelsError as error:
            raise CommandError(f"{error}: fix the labels file and run add again", 2) from error
    files, unusable = _slide_files(args, ctx)
    try:
        report = _add(args, ctx, files)
    except WorkspaceFull as error:
        raise CommandError(str(error), 1) from error
    if args.json:
        from wsireview.status import catalog_status

        doc = catalog_status(ctx.catalog(), ctx.workspace)
        doc["added"] = {k: report.count(k) for k in OUTCOMES}
        doc["unmatched_labels"] = [{"line": ln, "slide": s, "label": lb} for ln, s, lb in report.unmatched_labels]
        doc["empty_labels"] = [{"line": ln, "slide": s} for ln, s in report.empty_labels]
        doc["similar_labels"] = [list(group) for group in report.similar_labels]
        print(json.dumps(doc, indent=2, default=str))
    else:
        _print_report(ctx, report)
        if len(report.results) > report.failed and needs_labels(ctx.catalog()):
            ctx.console.print(f"[yellow]next:[/] {escape(label_first_step())}", soft_wrap=True)
    return 1 if report.failed or unusable else 0


def _add(args: argparse.Namespace, ctx, files: list[Path]):
    with progress_bar(ctx.err, enabled=not args.json, transient=True) as show:
        return add_paths(
            ctx.catalog(), ctx.workspace, files, labels_csv=args.labels,
            patch_size=args.patch_size, target_mpp=args.mpp, min_tissue=args.min_tissue, retile=args.retile,
            limits=ReaderLimits(workers=args.workers, timeout_s=args.timeout, memory_gb=args.max_memory),
            on_progress=show,
        )


def _slide_files(args: argparse.Namespace, ctx) -> tuple[list[Path], int]:
    """The slide files the inputs name or hold, and how many inputs gave none.

    When no input gives any, that is the command's error; otherwise each such input is reported
    (an ``error:`` line, as every failure) and the others are ingested.
    """
    files: list[Path] = []
    problems: list[str] = []
    for path in args.paths:
        found = discover([path], recursive=args.recursive) if path.exists() else []
        if found:
            files.extend(found)
        elif not path.exists():
            problems.append(f"not found: {path}: check the path")
        elif not args.recursive and discover([path], recursive=True):
            problems.append(f"no slide files found in {path}: its sub-folders hold some, add --recursive")
        else:
            problems.append(f"no slide files found in {path}: give slide files (.svs, .tiff, .ndpi, .mrxs, ...) "
                            "or a folder holding them")
    if not files:  # no empty table, and no catalog is created
        raise CommandError("; ".join(problems))
    for problem in problems:
        print_error(ctx.err, problem)
    return files, len(problems)


def _print_report(ctx, report) -> None:
    table = Table(title="Ingest", show_lines=False)
    for column in ("slide", "outcome", "tissue", "patches", "time"):
        table.add_column(column, justify="right" if column in ("tissue", "patches", "time") else "left",
                         no_wrap=column != "slide")
    styles = {ADDED: "green", UNCHANGED: "dim", MOVED: "cyan", DUPLICATE: "yellow", FAILED: "red"}
    notes = []
    for r in report.results:
        note = r.reason or r.warning
        if note:
            notes.append((safe_name(r.path.name), note))
        table.add_row(
            safe_name(r.path.name), f"[{styles[r.outcome]}]{r.outcome}[/]" + ("*" if note else ""),
            "" if r.tissue_fraction is None else f"{r.tissue_fraction:.1%}",
            str(r.patches), f"{r.seconds:.1f}s",
        )
    ctx.console.print(table)
    for name, note in notes:
        ctx.console.print(f"[dim]*[/] [bold]{name}[/]: {safe_name(note)}")
    summary = ", ".join(f"{report.count(k)} {k}" for k in OUTCOMES)
    zero = [safe_name(r.path.name) for r in report.results if r.outcome in CATALOGUED and r.patches == 0]
    ctx.console.print(f"[bold]{summary}[/]" + (f"; {len(zero)} with zero patches: {', '.join(zero)}" if zero else ""))
    if report.missing:
        ctx.console.print(f"[yellow]marked missing (file gone):[/] {', '.join(map(safe_name, report.missing))}")
    if report.labels_applied or report.unmatched_labels or report.empty_labels:
        ctx.console.print(f"labels applied: {report.labels_applied}")
    for line, slide, label in report.unmatched_labels[:MAX_LABEL_WARNINGS]:
        ctx.console.print(f"[yellow]label row {line} matches no slide:[/] {escape(repr(slide))} -> {escape(repr(label))}")
    if len(report.unmatched_labels) > MAX_LABEL_WARNINGS:
        ctx.console.print(f"[yellow]... and {len(report.unmatched_labels) - MAX_LABEL_WARNINGS:,} more label rows "
                          "that match no slide[/] (add --json to list them all)")
    for line, slide in report.empty_labels[:MAX_LABEL_WARNINGS]:
        ctx.console.print(f"[yellow]label row {line} has an empty label, skipped:[/] {escape(repr(slide))} "
                          "keeps the label it had")
    if len(report.empty_labels) > MAX_LABEL_WARNINGS:
        ctx.console.print(f"[yellow]... and {len(report.empty_labels) - MAX_LABEL_WARNINGS:,} more rows with an "
                          "empty label[/], skipped")
    if warning := mixed_grids_warning(patch_grids(ctx.catalog())):
        ctx.console.print(f"[yellow]{escape(warning)}[/]", soft_wrap=True)
    for group in report.similar_labels:
        spellings = ", ".join(repr(label) for label in group)
        ctx.console.print(f"[yellow]labels {escape(spellings)} differ only by case or spaces:[/] they are different "
                          f"classes (only the exact --positive spelling is positive); use one spelling in the labels CSV",
                          soft_wrap=True)

