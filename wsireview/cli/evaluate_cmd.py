"""`wsireview evaluate`: simulated review rounds against ground-truth lesion polygons."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from wsireview.cli import SUBCOMMANDS, CommandError, plural
from wsireview.cli.retrain_cmd import check_encoder, check_positive, check_training_options
from wsireview.features.encoders import DEFAULT_ENCODER, EncoderError
from wsireview.learn.evaluate import TEST_SHARE
from wsireview.learn.query import STRATEGIES
from wsireview.learn.train import TrainParams


def register(sub) -> None:
    parser = sub.add_parser(
        "evaluate", help=SUBCOMMANDS["evaluate"],
        description=(
            "Simulate the review loop on the catalog's slides with a perfect reviewer: a patch is lesion "
            "when more than half of it lies inside a lesion polygon of --truth. For each seed and strategy, on a "
            "throw-away copy of the catalog: retrain, review the queue with the truth, repeat --rounds "
            "times. A test split of the labelled slides (--test-share of each class, drawn from the seed) is held "
            "out of every round: no label, no verdict, never queued; the slide AUC on it is reported beside the "
            "cross-validated one. Writes curve.csv (strategy, seed, round, verdicts, lesion_found, instance_auc, "
            "slide_auc, test_slide_auc; instance AUC over all patches against the truth), summary.csv (mean and "
            "standard deviation over the seeds), yield.csv (per queue reason: patches queued, of which lesion) and "
            "curve.png, and prints the tables. The real catalog is not changed."
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
    parser.add_argument("--out", metavar="DIR", help="where to write curve.csv, summary.csv, yield.csv and curve.png "
                        "(default: a new folder under <workspace>/evaluations)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, metavar="NAME", help=f"feature encoder (default {DEFAULT_ENCODER})")
    parser.add_argument("--positive", default="lesion", metavar="LABEL", help="positive slide label (default lesion)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--seeds", metavar="LIST", help="comma-separated seeds (e.g. 0,1,2): repeat the whole "
                        "simulation with each, test split included, and report mean and spread (overrides --seed)")
    parser.add_argument("--test-share", type=float, default=TEST_SHARE, metavar="F",
                        help="share of each class's labelled slides held out as the test split "
                             f"(default {TEST_SHARE:.2f}; a class keeps at least 2 slides for training; 0 = none)")
    parser.add_argument("--instance-weight", type=float, default=1.0, metavar="W",
                        help="weight of the reviewed-patch loss (default 1.0)")
    parser.add_argument("--distill", type=float, default=0.5, metavar="W",
                        help="weight of the attention-distillation loss on the instance head (default 0.5; "
                             "0 = the instance head learns from verdicts alone)")
    parser.set_defaults(func=run)


def _seeds(args) -> tuple[int, ...]:
    if not args.seeds:
        return (args.seed,)
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
    except ValueError:
        raise CommandError(f"--seeds must be comma-separated integers, e.g. 0,1,2, not {args.seeds!r}", 2) from None
    if not seeds:
        raise CommandError("--seeds names no seed", 2)
    return seeds


def run(args, ctx) -> int:
    from wsireview.learn.curves import queue_yield, summarise
    from wsireview.learn.evaluate import evaluate

    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise CommandError(f"unknown strategy {', '.join(unknown) or '(none)'}; choose from {', '.join(STRATEGIES)}", 2)
    if not Path(args.truth).is_dir():
        raise CommandError(f"--truth must be a folder of GeoJSON files: {args.truth}", 2)
    if args.rounds < 0 or args.budget < 1:
        raise CommandError("--rounds must be 0 or more and --budget 1 or more (patches reviewed per round)", 2)
    if not 0 <= args.test_share < 1:
        raise CommandError("--test-share must be at least 0 and below 1", 2)
    seeds = _seeds(args)
    check_training_options(args)
    catalog = ctx.catalog(create=False)
    check_encoder(catalog, args.encoder)
    check_positive(ctx, catalog, args.positive)
    try:
        result = evaluate(
            catalog, ctx.workspace, Path(args.truth), rounds=args.rounds, budget=args.budget,
            strategies=strategies, out_dir=Path(args.out) if args.out else None, encoder=args.encoder,
            seeds=seeds, positive=args.positive, test_share=args.test_share,
            params=TrainParams(instance_weight=args.instance_weight, bag_instance_weight=args.distill),
            report=lambda line: ctx.err.print(f"  {escape(line)}"),
        )
    except EncoderError as error:  # e.g. a TorchScript file that cannot be loaded
        raise CommandError(str(error), 2) from error
    found = plural(result.truth_lesion_patches, "lesion patch")
    over = f", mean ± sd over {plural(len(seeds), 'seed')}" if len(seeds) > 1 else ""
    table = Table(title=f"Learning curve: {found} of {result.patches} in the truth{over}")
    for col in ("strategy", "round", "verdicts", "lesion found", "instance AUC", "slide AUC test", "slide AUC CV"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for row in summarise(result.points):
        m = row.metrics
        table.add_row(row.strategy, str(row.round), str(row.verdicts), m["lesion_found"].format(1),
                      m["instance_auc"].format(), m["test_slide_auc"].format(), m["slide_auc"].format())
    ctx.console.print(table)
    held = "; ".join(f"seed {s}: {', '.join(names) or 'none'}" for s, names in result.test_slides.items())
    ctx.console.print(f"Test split (never trained on): {held}")
    ctx.console.print(yield_table(queue_yield(result.points)))
    ctx.console.print(f"wrote curve.csv, summary.csv, yield.csv and curve.png in {result.out_dir}")
    return 0


def yield_table(yields: dict[str, dict[str, tuple[int, int]]]) -> Table:
    """Per strategy and queue reason: patches queued and reviewed, of which lesion, over all rounds and seeds."""
    table = Table(title="Queue yield (all rounds and seeds)")
    for col in ("strategy", "reason", "queued", "lesion", "yield"):
        table.add_column(col, justify="left" if col in ("strategy", "reason") else "right")
    for strategy, reasons in yields.items():
        for reason, (queued, lesion) in sorted(reasons.items()):
            table.add_row(strategy, reason, str(queued), str(lesion), f"{100 * lesion / queued:.1f}%" if queued else "-")
    return table
