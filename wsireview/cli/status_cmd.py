"""`wsireview status`: the catalog at a glance (or one JSON document for scripts)."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from wsireview.cli import SUBCOMMANDS, hint, plural
from wsireview.learn.labels import label_first_step, needs_labels
from wsireview.status import catalog_status, mark_missing, mixed_grids_warning
from wsireview.text import literal


def register(sub) -> None:
    parser = sub.add_parser("status", help=SUBCOMMANDS["status"],
                            description="Show the catalog. With --json, print one JSON document with every "
                            "slide (name, path, status, reason, size, mpp, tissue fraction, patches, label, "
                            "thumbnail and mask PNGs), totals, verdict counts, the latest model version and its queue's "
                            "progress (the team's count, each reviewer's, and who holds claims).")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(func=run)


def _mpp_cell(slide: dict) -> str:
    """The recorded mpp, struck through with a note when ingest did not size patches from it."""
    if not slide["mpp"]:
        return "unknown"
    if slide["resolution_source"] not in (None, "mpp"):
        return f"[strike]{slide['mpp']:.4g}[/] [dim](not used)[/]"
    return f"{slide['mpp']:.3f}"


def queue_line(queue: dict) -> str:
    """The newest queue's progress, the team's count and each reviewer's labelled apart."""
    people = ", ".join(f"{literal(name)} {n}" for name, n in sorted(queue["reviewed_by_reviewer"].items()))
    line = (f"queue of version {queue['model_version_id']}: team {queue['reviewed_by_team']}/{queue['queued']} reviewed"
            + (f" (by reviewer: {people})" if people else ""))
    if queue["claimed_by_reviewer"]:
        line += "; claimed now: " + ", ".join(f"{literal(name)} {n}" for name, n in sorted(queue["claimed_by_reviewer"].items()))
    return line


def run(args, ctx) -> int:
    catalog = ctx.catalog(create=False)
    mark_missing(catalog)
    doc = catalog_status(catalog, ctx.workspace)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    if not doc["slides"]:
        ctx.console.print(f"The catalog in {literal(doc['workspace'])} is empty. Add slides with "
                          f"[bold]{escape(hint(args, 'add PATH... --labels labels.csv'))}[/], or make a demo cohort with "
                          f"[bold]{escape(hint(args, 'demo'))}[/].")
        return 0
    table = Table(title=f"Catalog: {literal(doc['workspace'])}")
    for column in ("slide", "status", "size", "mpp", "tissue", "patches", "label"):
        table.add_column(column, justify="right" if column in ("mpp", "tissue", "patches") else "left",
                         no_wrap=column != "slide")
    colours = {"ready": "green", "failed": "red", "missing": "yellow"}
    for s in doc["slides"]:
        size = f"{s['width']} x {s['height']}" if s["width"] else ""
        table.add_row(
            literal(s["name"]), f"[{colours.get(s['status'], 'white')}]{s['status']}[/]", size,
            _mpp_cell(s),
            f"{s['tissue_fraction']:.1%}" if s["tissue_fraction"] is not None else "",
            str(s["patches"]) + ("*" if s["reason"] or s["warning"] else ""), literal(s["label"] or ""),
        )
    ctx.console.print(table)
    for s in doc["slides"]:
        if s["reason"] or s["warning"]:
            ctx.console.print(f"[dim]*[/] [bold]{literal(s['name'])}[/]: {literal(s['reason'] or s['warning'])}")
    totals = doc["totals"]
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(totals["by_status"].items()))
    labels = literal(", ".join(f"{n} {k}" for k, n in sorted(totals["labels"].items()))) or "none"
    ctx.console.print(f"{plural(totals['slides'], 'slide')} ({statuses}); {plural(totals['patches'], 'patch')}; "
                      f"labels: {labels}")
    if totals["by_status"].get("ready") and needs_labels(catalog):
        ctx.console.print(f"[yellow]first step:[/] {escape(label_first_step())}", soft_wrap=True)
    if totals["zero_patches"]:
        ctx.console.print(f"[yellow]ready slides with zero patches:[/] {literal(', '.join(totals['zero_patches']))}")
    grids = {(g["patch_size_px"], g["target_mpp"]): g["slides"] for g in doc["grids"]}
    if warning := mixed_grids_warning(grids):
        ctx.console.print(f"[yellow]{literal(warning)}[/]", soft_wrap=True)
    verdicts = doc["verdicts"]
    if verdicts["total"]:
        ctx.console.print("verdicts: " + ", ".join(f"{n} {k}" for k, n in sorted(verdicts["by_verdict"].items())))
        patches = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(verdicts["by_patch"].items()))
        ctx.console.print(f"patches by their verdict (adjudicated, else majority): {patches}")
        waiting = verdicts["adjudication"]
        if waiting["pending"] or waiting["decided"]:
            how = f" (`{escape(hint(args, 'review --adjudicate'))}`)" if waiting["pending"] else ""
            ctx.console.print(f"adjudication: {waiting['pending']} waiting{how}, {waiting['decided']} decided")
    model = doc.get("model")
    if model and model.get("id"):
        queued = plural(model.get("queued", 0), "patch")
        ctx.console.print(f"latest model: version {model['id']}, {queued} queued for review")
        if model.get("scores_pruned"):
            ctx.console.print(f"scores pruned: {plural(len(model['scores_pruned']), 'version')} "
                              f"({', '.join(f'v{v}' for v in model['scores_pruned'])}); their queues, predictions "
                              "and reviews stay")
    if queue := doc.get("queue"):
        ctx.console.print(queue_line(queue))
    return 0
