"""`wsireview retile`: cut a new patch grid for slides already in the catalog."""

from __future__ import annotations

import argparse

from rich.markup import escape

from wsireview.cli.add_cmd import add_grid_options
from wsireview.cli import SUBCOMMANDS, CommandError
from wsireview.cli.add_cmd import _print_report as print_ingest_report
from wsireview.ingest import IngestReport, retile_slides
from wsireview.slides.examine import GridOptions
from wsireview.slides.isolated import ReaderLimits


def register(sub) -> None:
    parser = sub.add_parser(
        "retile", help=SUBCOMMANDS["retile"],
        description="Cut a new patch grid for slides in the catalog (every ready slide when none is named), "
        "as `add --retile` does: squares that stay keep their ids, features and reviews; the rest are retired. "
        "A slide whose new grid would drop reviewed patches keeps its grid, and the reason is shown.",
    )
    parser.add_argument("slides", nargs="*", metavar="SLIDE", help="slide names or paths as `status` lists them")
    add_grid_options(parser)
    parser.add_argument("--workers", type=int, default=ReaderLimits().workers, metavar="N",
                        help="slides read in parallel, each in its own process (0 reads in this process)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, ctx) -> int:
    if not 0 < args.min_tissue <= 1 or args.patch_size < 8 or args.mpp <= 0:
        raise CommandError("--min-tissue must be in (0, 1], --patch-size >= 8 and --mpp > 0", 2)
    if args.workers < 0:
        raise CommandError("--workers must be >= 0", 2)
    catalog = ctx.catalog(create=False)
    results = retile_slides(catalog, ctx.workspace, args.slides,
                            GridOptions(args.patch_size, args.mpp, args.min_tissue),
                            limits=ReaderLimits(workers=args.workers))
    if not results:
        ctx.console.print(escape("no ready slides to re-tile"))
        return 0
    print_ingest_report(ctx, IngestReport(results=results))
    refused = [r for r in results if r.outcome == "unchanged" and r.warning]
    return 1 if refused or any(r.outcome == "failed" for r in results) else 0
