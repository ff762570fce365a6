"""`wsireview export`: write the reviewed patches as a training set, QuPath objects or CLAM coordinates."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from rich.table import Table

from wsireview.catalog import VERDICTS
from wsireview.cli import SUBCOMMANDS, plural
from wsireview.cli.progress_bar import progress_bar
from wsireview.export import CONSENSUS_MODES, DROP_ORDER, FORMATS, ExportOptions, Selection, run_export
from wsireview.export.selection import default_consensus
from wsireview.export.selection import DROP_UNREADABLE
from wsireview.text import printable


def _date(text: str) -> datetime:
    """ISO date or date-time; without a zone it is read as UTC (how the catalog stores times)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO date: {text!r} (e.g. 2025-03-01 or 2025-03-01T14:00)") from error
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def register(sub) -> None:
    parser = sub.add_parser(
        "export",
        help=SUBCOMMANDS["export"],
        description="Export the patches pathologists labelled. Formats: imagefolder (OUT/<label>/*.png "
        "plus manifest.csv, loads with image-folder dataset readers), qupath (one GeoJSON per slide for "
        "File > Import objects), clam-h5 (OUT/patches/<slide>.h5 with coords and labels, for CLAM/TRIDENT), "
        "csv (manifest.csv alone). Every export also writes manifest.csv and export.json (options and counts). "
        "Each reviewer's latest verdict counts (undone ones never); reviewers are then combined by --consensus. "
        "OUT must be new or empty (or --force to replace it); the export is written beside OUT and renamed "
        "into place at the end, so an interrupted export leaves no OUT. A slide's label and macro images are never exported.",
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (new or empty)")
    parser.add_argument("--format", choices=FORMATS, default="imagefolder", help="output format (default imagefolder)")
    parser.add_argument("--label", nargs="+", choices=VERDICTS, metavar="L",
                        help=f"export only these consensus labels ({', '.join(VERDICTS)})")
    parser.add_argument("--reviewer", nargs="+", metavar="R", help="count only these reviewers' verdicts")
    parser.add_argument("--since", type=_date, metavar="DATE", help="count only verdicts given at or after DATE (ISO; UTC unless a zone is given)")
    parser.add_argument("--include-unsure", action="store_true",
                        help="treat 'unsure' as a label (default: an unsure verdict is an abstention)")
    parser.add_argument("--consensus", choices=CONSENSUS_MODES, default=None,
                        help="how reviewers combine, after each reviewer's latest verdict: adjudicated (the "
                             "adjudicator's decision, else the majority; the default once any patch is adjudicated), "
                             "majority (the default before; ties dropped), unanimous (disagreements dropped), "
                             "latest (most recent reviewer wins)")
    parser.add_argument("--patch-size", type=int, metavar="PX", help="output patch side in px (default: the catalog's)")
    parser.add_argument("--mpp", type=float, metavar="M", help="output resolution in µm/px (default: the catalog's); keeps patch centres")
    parser.add_argument("--anonymize", action="store_true",
                        help="replace slide names by stable pseudonyms (hash of the slide's content) everywhere in the output")
    parser.add_argument("--object-type", choices=("detection", "annotation"), default="detection",
                        help="QuPath object type for --format qupath (default detection)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty OUT (only once the new export is complete)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx) -> int:
    try:
        catalog = ctx.catalog(create=False)
        options = ExportOptions(
            format=args.format,
            selection=Selection(consensus=args.consensus or default_consensus(catalog), labels=tuple(args.label) if args.label else None,
                                reviewers=tuple(args.reviewer) if args.reviewer else None, since=args.since,
                                include_unsure=args.include_unsure),
            patch_size=args.patch_size, mpp=args.mpp, anonymize=args.anonymize, force=args.force,
            object_type=args.object_type,
        )
        with progress_bar(ctx.err, transient=True) as show:
            report = run_export(catalog, ctx.workspace, args.out, options, on_progress=show)
    except KeyboardInterrupt:
        ctx.err.print(f"[yellow]Interrupted:[/] the partial export was removed; {args.out} is as it was.")
        return 130
    _print(ctx, report)
    if report.unreadable:
        ctx.err.print(unreadable_line(report), markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0


def unreadable_line(report, shown: int = 3) -> str:
    """One line for the slides an export could not read: how many patches they cost, which slides
    (the first few, then a count) and why, and what to do."""
    lost = report.dropped.get(DROP_UNREADABLE, 0)
    items = list(report.unreadable.items())
    named = "; ".join(f"{printable(name)} ({printable(why)})" for name, why in items[:shown])
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return (f"warning: {plural(len(items), 'slide')} unreadable, {plural(lost, 'patch')} not exported, the slides "
            f"marked failed in the catalog: {named}{more}; the rest was exported; fix or replace the files and "
            "run `wsireview add` on them, then export again")


def _print(ctx, report) -> None:
    labels = sorted(report.per_label)
    table = Table(title=f"Exported {plural(len(report.patches), 'patch')} ({report.format}) to {report.out}")
    table.add_column("slide", no_wrap=True)
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("total", justify="right", style="bold")
    for name, counts in sorted(report.per_slide.items()):
        table.add_row(name, *[str(counts.get(lb, 0)) for lb in labels], str(sum(counts.values())))
    if report.patches:
        table.add_row("[bold]all[/]", *[f"[bold]{report.per_label[lb]}[/]" for lb in labels], str(len(report.patches)))
    ctx.console.print(table)
    dropped = [(why, report.dropped[why]) for why in DROP_ORDER if report.dropped.get(why)]
    text = ", ".join(f"{n} {why}" for why, n in dropped) or "none"
    ctx.console.print(f"{plural(report.reviewed, 'reviewed patch')}; dropped: {text}")
    if not report.patches:
        ctx.console.print("[yellow]Nothing to export matched; the folder holds only an empty manifest.[/]")
