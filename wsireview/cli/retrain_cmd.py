"""`wsireview retrain`: one active-learning round (embed what is missing, train, score, queue)."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Callable, Iterator

from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from wsireview.cli import SUBCOMMANDS, CommandError, hint, plural
from wsireview.cli.embed_cmd import add_cluster_option, add_device_option, check_cluster_option
from wsireview.devices import resolve_device
from wsireview.features.encoders import DEFAULT_ENCODER, EncoderError, check_encoder_name
from wsireview.features.store import feature_sets
from wsireview.learn.labels import label_first_step, needs_labels, similar_labels, slide_targets
from wsireview.learn.query import STRATEGIES
from wsireview.learn.round import NothingToLearn, retrain
from wsireview.learn.spec import RoundSpec, latest_spec
from wsireview.numbers import change_text, metric_text, rounded_change

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
            "every slide (the bag score combined with the instance evidence, verdicts in place) and queues the "
            "next --budget never-reviewed patches. Artifact patches leave the bags; verdicts spread to "
            "look-alike patches. Every option defaults to the latest model version's round (stored with it), "
            "else the default shown. Earlier versions are kept."
        ),
        epilog="Strategies: mix (default: the highest P(lesion) + top-attention patches of slides predicted "
               "positive + uncertain patches (the cross-validation models disagree) + diverse suspicious "
               "patches), attention, uncertainty, random. Next: `wsireview review` (triage screen) to review "
               "the queue, then retrain again.",
    )
    parser.add_argument("--budget", type=int, default=None, metavar="N",
                        help="patches to queue (default: the latest round's, else 50)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="how to choose them (default: the latest round's, else mix)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed: same seed, same model (default: the latest round's, else 0)")
    parser.add_argument("--encoder", default=None, metavar="NAME",
                        help=f"feature encoder (default: the latest round's, else {DEFAULT_ENCODER}; stain-stats is fast)")
    parser.add_argument("--positive", default=None, metavar="LABEL",
                        help="slide label of the positive class (default: the latest round's, else lesion); "
                             "other labels are negative")
    parser.add_argument("--instance-weight", type=float, default=None, metavar="W",
                        help="weight of the reviewed-patch loss against the slide loss (default: the latest "
                             "round's, else 1.0)")
    parser.add_argument("--distill", type=float, default=None, metavar="W",
                        help="weight of the attention-distillation loss that teaches the instance head what "
                             "attention found before any verdict (default: the latest round's, else 0.5; "
                             "0 = verdicts only)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="train exactly N epochs (default: the latest round's, else early stopping, at most 30)")
    parser.add_argument("--double-read", type=float, default=None, metavar="SHARE",
                        help="share of the queue (0 to 1) that a second reviewer also judges, blind to the first "
                             "verdict; a seeded choice (default: the latest round's, else 0)")
    parser.add_argument("--mixed-grids", action="store_true",
                        help="train even when ready slides were cut at different patch resolutions (refused otherwise; "
                        "`wsireview retile` puts them on one grid)")
    add_cluster_option(parser)
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.set_defaults(func=run)


def _change(new, old) -> str:
    if new is None or old is None:
        return ""
    delta = rounded_change(new - old)
    colour = "green" if delta > 0 else "red" if delta < 0 else "dim"
    return f"[{colour}]{change_text(delta)}[/]"


def _cv_words(folds: int) -> str:
    """``3-fold cross-validation``, or why there was none (not "0-fold")."""
    if folds:
        return f"{folds}-fold cross-validation"
    return "no cross-validation (it needs 2 labelled slides of each class)"


def check_training_options(args) -> None:
    """Refuse option values training cannot use (exit 2), before the catalog is opened."""
    problems = []
    if getattr(args, "epochs", None) is not None and args.epochs < 1:
        problems.append("--epochs must be 1 or more")
    if args.instance_weight is not None and args.instance_weight < 0:
        problems.append("--instance-weight must be 0 or more")
    if args.distill is not None and args.distill < 0:
        problems.append("--distill must be 0 or more")
    if getattr(args, "double_read", None) is not None and not 0 <= args.double_read <= 1:
        problems.append("--double-read must be a share between 0 and 1")
    if problems:
        raise CommandError("; ".join(problems), 2)


def check_encoder(catalog, name: str) -> None:
    """Refuse an encoder name no encoder answers to (exit 2), unless the catalog already holds
    features made under that name: a round on them needs no encoder (a benchmark's stand-in, say)."""
    if feature_sets(catalog, name):
        return
    try:
        check_encoder_name(name)
    except EncoderError as error:
        raise CommandError(str(error), 2) from error


def check_positive(ctx, catalog, positive: str) -> None:
    """Refuse a --positive label no slide carries while others are labelled: every labelled slide
    would silently be a negative. Warn when a spelling differing only by case or spaces exists."""
    _, labels = slide_targets(catalog, positive)
    counts = Counter(label for label in labels.values() if label is not None)
    if counts and positive not in counts:
        existing = ", ".join(f"{label!r} ({n})" for label, n in sorted(counts.items()))
        raise CommandError(f"no slide is labelled {positive!r}, so every labelled slide would be negative; "
                           f"the labels are {existing}: choose one with --positive")
    for group in similar_labels(counts):
        if positive in group:
            others = ", ".join(repr(label) for label in group if label != positive)
            ctx.err.print(f"[yellow]warning:[/] slides labelled {escape(others)} count as negative: only "
                          f"{escape(repr(positive))} is the positive class")


def round_spec(args, catalog) -> RoundSpec:
    """The latest version's spec (else the defaults) with the options given on the command line."""
    base = latest_spec(catalog) or RoundSpec()
    return base.replace(encoder=args.encoder, positive=args.positive, budget=args.budget, strategy=args.strategy,
                        seed=args.seed, epochs=args.epochs, instance_weight=args.instance_weight,
                        bag_instance_weight=args.distill, double_read=getattr(args, "double_read", None))


@contextlib.contextmanager
def progress_bar(console, enabled: bool) -> Iterator[Callable[[str, float], None]]:
    """The command line's bar over a round (a round reports its phases through one callback).

    Transient: the command prints the result (or the error) where the bar was.
    """
    columns = (SpinnerColumn(), TextColumn("{task.description:<44}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not enabled, transient=True) as display:
        task = display.add_task("starting", total=1.0)
        yield lambda what, fraction: display.update(task, description=what, completed=fraction)


def run(args, ctx) -> int:
    if args.budget is not None and args.budget < 0:
        raise CommandError("--budget must be 0 or more", 2)
    check_training_options(args)
    check_cluster_option(args)
    resolve_device(args.device)  # --device cuda without a GPU: refused before the catalog is opened
    catalog = ctx.catalog(create=False)
    spec = round_spec(args, catalog)
    check_encoder(catalog, spec.encoder)
    check_positive(ctx, catalog, spec.positive)
    if needs_labels(catalog):  # before embedding: minutes of work that could not be trained on
        raise NothingToLearn(label_first_step(spec.positive))
    try:
        with progress_bar(ctx.err, not args.no_progress) as show:
            result = retrain(catalog, ctx.workspace, spec, on_progress=show, mixed_grids=args.mixed_grids,
                             cluster=args.cluster, device=args.device)
    except EncoderError as error:  # e.g. a TorchScript file that cannot be loaded
        raise CommandError(str(error), 2) from error
    if result.embedded:
        ctx.err.print(f"Embedded {plural(result.embedded, 'slide')} with {escape(spec.encoder)} first.")
    previous = result.previous_metrics or {}
    title = f"Model version {result.model_version_id}"
    if result.parent_id:
        title += f" (previous: {result.parent_id})"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("change", justify="right")
    for key, label in METRICS:
        table.add_row(label, metric_text(result.metrics.get(key)), _change(result.metrics.get(key), previous.get(key)))
    ctx.console.print(table)
    counts = result.label_counts
    slides, patches = counts["slides"], counts["patches"]
    negative = plural(slides["negative"], "other labelled slide")
    ctx.console.print(
        f"trained on {slides['positive']} {escape(spec.positive)} and {negative} "
        f"({slides['unlabelled']} unlabelled), {plural(patches['lesion'], 'lesion verdict')} and "
        f"{plural(patches['not_lesion'], 'not-lesion verdict')}; {_cv_words(result.metrics['cv_folds'])}; "
        f"{result.seconds['total']:.1f} s"
    )
    review = escape(hint(args, "review"))
    if result.queued:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(result.queue_reasons.items()))
        if result.double_reads:
            reasons += f"; {result.double_reads} of them for a second, blinded reviewer"
        ctx.console.print(f"[bold]{plural(result.queued, 'patch')}[/] queued for review ({reasons}). "
                          f"Review them in the triage screen: `{review}`.", soft_wrap=True)
    elif spec.budget == 0:
        ctx.console.print("No review queue was built (--budget 0); retrain with --budget N to queue patches for review.")
    else:
        ctx.console.print("No review queue was built: every patch has been reviewed already.")
    return 0
