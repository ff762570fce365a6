"""`wsireview demo`: write a synthetic H&E cohort with known lesions, to try the whole loop."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from wsireview.cli import SUBCOMMANDS, CommandError, hint, plural
from wsireview.demo import generate_cohort, parse_size
from wsireview.demo.difficulty import DEFAULT_DIFFICULTY, DIFFICULTIES
from wsireview.demo.tiff import tile_grid

DEFAULT_FOLDER = "demo-cohort"
SHORT = {"inflammatory": "infl", "crushed": "crush", "inflamed stroma": "stroma"}  # mimic kinds in the table


def register(sub) -> None:
    parser = sub.add_parser(
        "demo",
        help=SUBCOMMANDS["demo"],
        description=(
            "Write synthetic whole-slide images (pyramidal tiled JPEG TIFF, 0.5 µm/px, OpenSlide-readable): "
            "H&E-like tissue with stroma and nuclei; half the slides carry small lesions (crowded, large, dark "
            "nuclei; ~0.5-2% of the tissue), and some carry pen marks, dust or a tissue fold. Also written: "
            "labels.csv (slide,label), <slide>.geojson with the lesion polygons in level-0 pixels (empty on normal "
            "slides), and truth/ with the generator's tissue and artifact masks and cohort.json. "
            "--difficulty medium or hard draws milder lesions (fewer, smaller, paler atypical nuclei among the "
            "normal ones) and puts lesion mimics on every slide (inflammatory cell clusters, crushed tissue), listed "
            "as not lesion in truth/<slide>.mimics.geojson. The same --seed and --difficulty give the same pixels."
        ),
        epilog="Next: wsireview add DIR --labels DIR/labels.csv, then wsireview retrain.",
    )
    parser.add_argument("--out", metavar="DIR", help=f"output folder (default: <workspace>/{DEFAULT_FOLDER})")
    parser.add_argument("--slides", type=int, default=12, metavar="N", help="number of slides (default: 12)")
    parser.add_argument(
        "--size", default="small", metavar="small|large|WxH",
        help="slide size: small = 4480x3360 px (~160 tissue patches of 224 px, a few seconds each), "
             "large = 40000x30000 px (benchmarks; minutes each), or WxH in level-0 pixels (default: small)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--difficulty", choices=list(DIFFICULTIES), default=DEFAULT_DIFFICULTY,
                        help="easy: bold lesions, nothing else like them; medium, hard: milder lesions and "
                             f"mimics that are not lesion (default: {DEFAULT_DIFFICULTY})")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes to render with (default: all CPU cores)")
    parser.set_defaults(func=run)


def run(args, ctx) -> int:
    width, height = parse_size(args.size)  # a DemoError (exit 2) says what sizes there are
    if args.slides < 1:
        raise CommandError("--slides must be at least 1", 2)
    out = Path(args.out) if args.out else ctx.workspace.root / DEFAULT_FOLDER
    if out.exists() and any(out.glob("demo-*.tiff")):
        ctx.console.print(f"[yellow]Overwriting the demo slides in {out}.[/]")

    total = args.slides * len(tile_grid(width, height))
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
               TimeElapsedColumn())
    with Progress(*columns, console=ctx.console, transient=True) as progress:
        task = progress.add_task(f"Rendering {plural(args.slides, 'slide')} of {width}x{height}", total=total)
        cohort = generate_cohort(out, n_slides=args.slides, size=(width, height), seed=args.seed,
                                 workers=args.workers, progress=lambda n: progress.advance(task, n),
                                 difficulty=args.difficulty)

    table = Table(title=f"Demo cohort in {out} (seed {args.seed}, {args.difficulty})")
    mimics = args.difficulty != DEFAULT_DIFFICULTY
    headers = ["slide", "label", "lesion % of tissue", "artifacts"] + (["mimics"] if mimics else []) + ["levels", "seconds"]
    for column in headers:
        table.add_column(column, justify="right" if column in ("lesion % of tissue", "levels", "seconds") else "left")
    for s in cohort.slides:
        share = f"{100 * s.lesion_share:.2f}" if s.label == "lesion" else "-"
        kinds = [", ".join(f"{n} {SHORT.get(kind, kind)}" for kind, n in sorted(s.mimics.items())) or "-"] if mimics else []
        table.add_row(s.name, s.label, share, ", ".join(s.artifacts) or "-", *kinds, str(len(s.levels)),
                      f"{s.seconds:.1f}")
    ctx.console.print(table)
    command = hint(args, f"add {shlex.quote(str(out))} --labels {shlex.quote(str(cohort.labels_csv))}")
    # Not wrapped: the next command stays one line that can be copied.
    ctx.console.print(f"Labels: {cohort.labels_csv}\nGround truth: <slide>.geojson and {out / 'truth'}\n"
                      f"Next: [bold]{escape(command)}[/]", soft_wrap=True)
    return 0
