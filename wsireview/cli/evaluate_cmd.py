"""`wsireview evaluate`: simulated review rounds against ground-truth lesion polygons."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from wsireview.cli import SUBCOMMANDS, CommandError, plural
from wsireview.cli.retrain_cmd import check_encoder, check_positive, check_training_options
from wsireview.features.encoders import DEFAULT_ENCODER, EncoderError
from wsireview.learn.query import STRATEGIES
from wsireview.learn.round import NothingToLearn
from wsireview.learn.train import TrainParams


def register(sub) -> None:
    parser = sub.add_parser(
        "evaluate", help=SUBCOMMANDS["evaluate"],
        description=(
            "Simulate the review loop on the catalog's slides with a perfect reviewer: a patch is lesion "
            "when more than half of it lies inside a lesion polygon of --truth. For each strategy, on a "
            "throw-away copy of the catalog: retrain, review the queue with the truth, repeat --rounds "
            "times. Writes curve.csv (strategy, round, verdicts, lesion_found, instance_auc, slide_auc; "
            "instance AUC over all patches against the truth) and curve.png, and prints the table. The "
            "real catalog is not changed."
        ),
        epilog="--truth DIR holds <slide file stem>.geojson FeatureCollections of Polygon lesion regions in "
               "level-0 pixels (slide-07.tiff -> slide-07.geojson); a slide without a file has no lesion. "
               "`wsireview demo` writes exactly this next to its slides.",
    )
    parser.add_argument("--truth", required=True, metavar="DIR", help="folder of ground-truth GeoJSON files")
    parser.add_argument("--rounds", type=int, default=3, metavar="R", help="review rounds per strategy (default 3)")
    parser.add_argument("--budget", type=int, default=20, metavar="N", help="patches reviewed per round (default 20)")
    parser.add_argument("--strategies", default="mix,random", metavar="LIST",
                        help=f"comma-separated, from {', '.join(STRATEGIES)} (default mix,random)")
    parser.add_argument("--out", metavar="DIR", help="where to write curve.csv and curve.png "
                        "(default: a new folder under <workspace>/evaluations)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, metavar="NAME", help=f"feature encoder (default {DEFAULT_ENCODER})")
    parser.add_argument("--positive", default="lesion", metavar="LABEL", help="positive slide label (default lesion)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--instance-weight", type=float, default=1.0, metavar="W",
                        help="weight of the reviewed-patch loss (default 1.0)")
    parser.add_argument("--distill", type=float, default=0.5, metavar="W",
                        help="weight of the attention-distillation loss on the instance head (default 0.5; "
                             "0 = the instance head learns from verdicts alone)")
    parser.set_defaults(func=run)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def run(args, ctx) -> int:
    from wsireview.learn.evaluate import evaluate

    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        ctx.err.print(f"[red]unknown strategy {', '.join(unknown) or '(none)'}[/]; choose from {', '.join(STRATEGIES)}")
        return 2
    if not Path(args.truth).is_dir():
        ctx.err.print(f"[red]--truth must be a folder of GeoJSON files:[/] {escape(args.truth)}")
        return 2
    if args.rounds < 0 or args.budget < 1:
        raise CommandError("--rounds must be 0 or more and --budget 1 or more (patches reviewed per round)", 2)
    check_training_options(args)
    catalog = ctx.catalog(create=False)
    check_encoder(catalog, args.encoder)
    check_positive(ctx, catalog, args.positive)
    try:
        result = evaluate(
            catalog, ctx.workspace, Path(args.truth), rounds=args.rounds, budget=args.budget,
            strategies=strategies, out_dir=Path(args.out) if args.out else None, encoder=args.encoder,
            seed=args.seed, positive=args.positive, console=ctx.err,
            params=TrainParams(instance_weight=args.instance_weight, bag_instance_weight=args.distill),
        )
    except (NothingToLearn, FileExistsError, ValueError) as exc:
        ctx.err.print(f"[red]{escape(str(exc))}[/]")
        return 1
    except EncoderError as error:  # e.g. a TorchScript file that cannot be loaded
        raise CommandError(str(error), 2) from error
    found = plural(result.truth_lesion_patches, "lesion patch")
    table = Table(title=f"Learning curve: {found} of {result.patches} in the truth")
    for col in ("strategy", "round", "verdicts", "lesion found", "instance AUC", "slide AUC"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for p in result.points:
        table.add_row(p.strategy, str(p.round), str(p.verdicts), str(p.lesion_found), _fmt(p.instance_auc), _fmt(p.slide_auc))
    ctx.console.print(table)
    ctx.console.print(f"wrote {result.out_dir / 'curve.csv'} and {result.out_dir / 'curve.png'}")
    return 0
