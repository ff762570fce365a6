"""`wsireview retrain`: one active-learning round (embed what is missing, train, score, queue)."""

from __future__ import annotations

from rich.table import Table

from wsireview.cli import SUBCOMMANDS
from wsireview.features.encoders import DEFAULT_ENCODER
from wsireview.learn.query import STRATEGIES
from wsireview.learn.round import NothingToLearn, retrain
from wsireview.learn.train import TrainParams

METRICS = [
    ("slide_auc", "slide AUC (cross-validated)"),
    ("slide_accuracy", "slide accuracy (cross-validated)"),
    ("instance_auc", "instance AUC (held-out reviewed patches)"),
    ("instance_auc_fit", "instance AUC (all reviewed patches, new model)"),
]


def register(sub) -> None:
    parser = sub.add_parser(
        "retrain", help=SUBCOMMANDS["retrain"],
        description=(
            "One round of the review loop. Embeds any ready slide without features for the encoder, "
            "trains a gated-attention MIL model on the slide labels (--positive is the positive class, "
            "every other label negative) and on every lesion/not-lesion verdict, cross-validates it over "
            "the labelled slides, scores every patch (attention, lesion probability, uncertainty), predicts "
            "every slide and queues the next --budget never-reviewed patches. Earlier versions are kept."
        ),
        epilog="Strategies: mix (default: top-attention patches of slides predicted positive + uncertain "
               "patches + diverse suspicious patches), attention, uncertainty, random. Next: `wsireview` "
               "(triage screen) to review the queue, then retrain again.",
    )
    parser.add_argument("--budget", type=int, default=50, metavar="N", help="patches to queue (default 50)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="mix", help="how to choose them (default mix)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same model (default 0)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, metavar="NAME",
                        help=f"feature encoder (default {DEFAULT_ENCODER}; stain-stats is fast)")
    parser.add_argument("--positive", default="lesion", metavar="LABEL",
                        help="slide label of the positive class (default lesion); other labels are negative")
    parser.add_argument("--instance-weight", type=float, default=1.0, metavar="W",
                        help="weight of the reviewed-patch loss against the slide loss (default 1.0)")
    parser.add_argument("--distill", type=float, default=0.5, metavar="W",
                        help="weight of the attention-distillation loss that teaches the instance head what "
                             "attention found before any verdict (default 0.5; 0 = verdicts only)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="train exactly N epochs (default: early stopping, at most 30)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.set_defaults(func=run)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _change(new, old) -> str:
    if new is None or old is None:
        return ""
    delta = new - old
    colour = "green" if delta > 0 else "red" if delta < 0 else "dim"
    return f"[{colour}]{delta:+.3f}[/]"


def run(args, ctx) -> int:
    if args.budget < 0:
        ctx.err.print("[red]--budget must be 0 or more[/]")
        return 2
    catalog = ctx.catalog()
    try:
        result = retrain(
            catalog, ctx.workspace, encoder=args.encoder, budget=args.budget, strategy=args.strategy,
            seed=args.seed, positive=args.positive, epochs=args.epochs, progress=not args.no_progress,
            console=ctx.err, params=TrainParams(instance_weight=args.instance_weight, bag_instance_weight=args.distill),
        )
    except NothingToLearn as exc:
        ctx.err.print(f"[red]Nothing to learn from:[/] {exc}")
        return 1
    previous = result.previous_metrics or {}
    title = f"Model version {result.model_version_id}"
    if result.parent_id:
        title += f" (previous: {result.parent_id})"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("change", justify="right")
    for key, label in METRICS:
        table.add_row(label, _fmt(result.metrics.get(key)), _change(result.metrics.get(key), previous.get(key)))
    ctx.console.print(table)
    counts = result.label_counts
    slides, patches = counts["slides"], counts["patches"]
    ctx.console.print(
        f"trained on {slides['positive']} {args.positive} and {slides['negative']} other labelled slides "
        f"({slides['unlabelled']} unlabelled), {patches['lesion']} lesion and {patches['not_lesion']} "
        f"not-lesion verdicts; {result.metrics['cv_folds']}-fold cross-validation; "
        f"{result.seconds['total']:.1f} s"
    )
    reasons = ", ".join(f"{n} {r}" for r, n in sorted(result.queue_reasons.items())) or "none"
    ctx.console.print(f"[bold]{result.queued}[/] patches queued for review ({reasons}). "
                      "Review them in the triage screen: `wsireview`.")
    return 0
