"""`wsireview embed`: patch features for every ready slide that has none yet for the chosen encoder."""

from __future__ import annotations

from rich.table import Table

from wsireview.cli import SUBCOMMANDS, CommandError, plural
from wsireview.cli.progress_bar import progress_bar
from wsireview.devices import DEFAULT_DEVICE, DEVICES, resolve_device
from wsireview.features.cluster import ClusterError, embed_on_cluster, local_workers
from wsireview.features.embed import DEFAULT_WORKERS, EMBEDDED, EMPTY, FAILED, embed_slides
from wsireview.features.encoders import DEFAULT_ENCODER, PRECISIONS, RUNTIMES, EncoderError, check_encoder_name


def add_cluster_option(parser) -> None:
    """--cluster: the option `embed` and `retrain` share."""
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="embed on a Dask cluster, one task per slide: a scheduler address (tcp://host:8786; "
                             "workspace and slides on a filesystem every worker shares) or local:N (N worker "
                             "processes on this machine)")


def add_device_option(parser) -> None:
    """--device: the option `embed` and `retrain` share."""
    parser.add_argument("--device", choices=DEVICES, default=DEFAULT_DEVICE,
                        help="where torch encoders and training run: auto (default: CUDA when torch sees a GPU, "
                             "else the CPU), cpu, or cuda (refused without a GPU); on a GPU the batches grow to "
                             "fit its memory. With --cluster, each worker uses its own auto")


def check_cluster_option(args) -> None:
    """Refuse a malformed local:N (exit 2) before the catalog is opened."""
    if getattr(args, "cluster", None):
        try:
            local_workers(args.cluster)
        except ClusterError as error:
            raise CommandError(str(error), 2) from error


def register(sub) -> None:
    parser = sub.add_parser(
        "embed",
        help=SUBCOMMANDS["embed"],
        description=(
            "Read every patch of every ready slide at the catalog's target resolution and store its "
            "features (float16, one matrix per slide and encoder, in the workspace). Slides that "
            "already have features for the encoder are skipped, so an interrupted run resumes where "
            "it stopped; a slide whose pixels cannot be read is reported and skipped. With --cluster, "
            "each slide is a task on a Dask cluster: workers read the slides and write the feature files, "
            "this command records them in the catalog, and a slide whose worker dies is run again elsewhere."
        ),
        epilog=(
            "Encoders: effnet-lite0 (default; EfficientNet-Lite0, ImageNet weights shipped with the "
            "package, 1280-d); stain-stats (hematoxylin/eosin statistics, no weights, fast); "
            "torchscript:PATH (your own TorchScript model: it receives a float32 batch N x 3 x 224 x 224, "
            "RGB scaled to 0..1 and normalised with the ImageNet mean (0.485, 0.456, 0.406) and std "
            "(0.229, 0.224, 0.225), and returns N x D). "
            "Runtime `auto` picks torch.compile + bfloat16 on CPUs with native bfloat16 (AVX512-BF16/AMX), "
            "else ONNX Runtime fp32; `--runtime eager --precision fp32` is the reference."
        ),
    )
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, metavar="NAME",
                        help="effnet-lite0 (default), stain-stats or torchscript:PATH")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="patches per model call (default: the encoder's best; 8 for effnet-lite0)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                        help=f"threads reading patches ahead of the model (default: {DEFAULT_WORKERS}; on a cluster, "
                             "per slide task)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="compute threads for the model (default: torch's, i.e. the CPU cores; on a cluster, "
                             "each machine's cores divided among its worker threads)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="effnet-lite0 arithmetic (default: auto = bf16 where the CPU has native bfloat16, else fp32)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="effnet-lite0 runtime: eager torch, torch.compile or ONNX Runtime (default: auto)")
    parser.add_argument("--slide", type=int, action="append", dest="slide_ids", metavar="ID",
                        help="only this slide id (repeatable)")
    add_cluster_option(parser)
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args, ctx) -> int:
    try:
        check_encoder_name(args.encoder)  # a typo is bad usage, whatever the workspace holds
        check_cluster_option(args)
        resolve_device(args.device)  # --device cuda without a GPU: refused before the catalog is opened
        catalog = ctx.catalog(create=False)
        options = dict(encoder=args.encoder, batch_size=args.batch_size, workers=args.workers,
                       slide_ids=args.slide_ids, precision=args.precision, runtime=args.runtime, threads=args.threads)
        with progress_bar(ctx.err, not args.no_progress) as show:
            if args.cluster:
                report = embed_on_cluster(catalog, ctx.workspace, args.cluster, on_progress=show, **options)
            else:
                report = embed_slides(catalog, ctx.workspace, on_progress=show, device=args.device, **options)
    except EncoderError as error:
        raise CommandError(str(error), 2) from error
    if not report.results:
        ctx.console.print(
            f"Nothing to embed: {plural(report.already_done, 'ready slide')} already "
            f"{'has' if report.already_done == 1 else 'have'} {report.encoder} features."
        )
        return 0
    table = Table(title=f"Embedded with {report.encoder} ({report.backend})")
    table.add_column("slide")
    table.add_column("outcome")
    table.add_column("patches", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    styles = {EMBEDDED: "green", EMPTY: "yellow", FAILED: "red"}
    for r in report.results:
        note = r.reason or ("no patches: an empty matrix is recorded" if r.outcome == EMPTY else "")
        table.add_row(r.name, f"[{styles[r.outcome]}]{r.outcome}[/]", str(r.patches), f"{r.seconds:.1f}", note)
    ctx.console.print(table)
    ready = "cluster" if args.cluster else "model"
    ctx.console.print(
        f"{report.patches:,} {'patch' if report.patches == 1 else 'patches'} in {report.seconds:.1f} s = "
        f"[bold]{report.patches_per_second:,.0f} patches/s[/] ({ready} ready in {report.load_seconds:.1f} s); "
        f"{plural(report.already_done, 'slide')} already embedded."
    )
    return 1 if report.failed else 0
