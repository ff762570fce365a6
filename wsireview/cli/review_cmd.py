"""`wsireview review` opens the app on the triage screen; `wsireview` alone opens it on the slides."""

from __future__ import annotations

import os
from pathlib import Path

from wsireview.cli import SUBCOMMANDS, CommandError

ENV_GRAPHICS = "WSIREVIEW_GRAPHICS"  # also accepts "textual-image" (the latency benchmark's baseline)
ENV_LATENCY_LOG = "WSIREVIEW_LATENCY_LOG"


def register(sub) -> None:
    parser = sub.add_parser(
        "review",
        help=SUBCOMMANDS["review"],
        description=(
            "Open the review app on the triage screen: the latest model's queue across all slides, or one "
            "slide's. One key per verdict (y lesion, n not lesion, u unsure, a artifact; z undo, space skip, "
            "+/- zoom to full resolution, arrows pan, 0 back to the patch, c context, f fill the terminal, "
            "s where on the slide, N a newer model's queue, ? all keys). Every verdict is saved the moment the "
            "key is pressed, with the reviewer and the seconds taken. Reviewers working at once share the queue: "
            "each holds a short claim on the next few patches and never sees what another holds or judged. "
            "Items of a double read (`retrain --double-read`) stay in the queue "
            "until a second, different reviewer has judged them, and that reviewer does not see the first verdict. "
            "With --adjudicate, the adjudication queue instead: patches whose reviewers disagree (or were all "
            "unsure), each with every reviewer's verdict and name; your key is the decision that training and "
            "export use. The queue comes from `wsireview retrain`, which needs slide labels: "
            "label slides first (`l` on the slides screen of `wsireview`, or `wsireview add --labels CSV`)."
        ),
    )
    parser.add_argument("--slide", metavar="NAME", help="review only this slide's queued patches (name or path)")
    parser.add_argument(
        "--reviewer", metavar="NAME",
        help="name recorded with every verdict (default: $WSIREVIEW_REVIEWER, else the login name)",
    )
    parser.add_argument("--adjudicate", action="store_true",
                        help="open the adjudication queue as adjudicator (the reviewer name): see every reviewer's "
                             "verdict on patches they disagree on, and decide")
    parser.set_defaults(func=run)


def _graphics(args) -> str:
    return getattr(args, "graphics", None) or os.environ.get(ENV_GRAPHICS) or "auto"


def _launch(args, ctx, start: str, slide_id: int | None = None, adjudicate: bool = False) -> int:
    from wsireview.learn.reviews import default_reviewer
    from wsireview.tui import graphics as graphics_modes
    from wsireview.tui.app import GRAPHICS, ReviewApp

    requested = _graphics(args)
    if requested not in GRAPHICS and requested != "auto":
        raise CommandError(f"unknown graphics {requested!r}: use one of {', '.join(graphics_modes.MODES)}", 2)
    # textual-image asks the terminal when imported; inside a running app Textual owns stdin and
    # the answer never arrives (the app hangs on a blank screen), so every question is asked now.
    graphics = graphics_modes.resolve(requested)
    if graphics != "halfblock":
        import textual_image.widget  # noqa: F401  (asks for the cell size in pixels)
    log = os.environ.get(ENV_LATENCY_LOG)
    app = ReviewApp(
        workspace=ctx.workspace,
        catalog=ctx.catalog(),
        reviewer=getattr(args, "reviewer", None) or default_reviewer(),
        graphics=graphics,
        start=start,
        slide_id=slide_id,
        adjudicate=adjudicate,
        latency_log=Path(log) if log else None,
    )
    app.run()
    return app.return_code or 0


def run(args, ctx) -> int:
    slide_id = None
    if args.adjudicate and args.slide:
        raise CommandError("--adjudicate takes the whole adjudication queue: leave out --slide", 2)
    if args.slide:
        from wsireview.catalog.queries import find_slide

        slide_id = find_slide(ctx.catalog(), args.slide)
        if slide_id is None:
            raise CommandError(f"no slide named {args.slide!r} in the catalog (see `wsireview status`)")
    return _launch(args, ctx, "review", slide_id, adjudicate=args.adjudicate)


def open_app(args, ctx) -> int:
    return _launch(args, ctx, "slides")
