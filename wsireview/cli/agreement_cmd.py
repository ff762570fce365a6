"""`wsireview agreement`: how far reviewers agree (Cohen's kappa per pair, Fleiss' kappa, confusion tables)."""

from __future__ import annotations

import json

from wsireview.cli import SUBCOMMANDS


def register(sub) -> None:
    parser = sub.add_parser(
        "agreement", help=SUBCOMMANDS["agreement"],
        description="Agreement between reviewers over each one's latest read of a patch (the four verdicts "
                    "are the categories): per pair of reviewers the patches both judged, percent agreement, "
                    "Cohen's kappa with a 95% confidence interval (kappa ± 1.96 SE, the SE of Fleiss, Cohen & "
                    "Everitt 1969) and a confusion table; Fleiss' kappa over every patch with two or more reads "
                    "(the form for unequal numbers of reads per patch); the adjudication queue's size. Double "
                    "reads (`wsireview retrain --double-read 0.1`) give every pair patches in common.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)


def run(args, ctx) -> int:
    from wsireview.agreement_text import agreement_renderable
    from wsireview.learn.agreement import agreement_report

    report = agreement_report(ctx.catalog(create=False))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    ctx.console.print(agreement_renderable(report))
    return 0
