"""`wsireview db upgrade|downgrade|current|check|prune`: catalog migrations, files no catalog row owns,
and older model versions' score files."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from wsireview.catalog.db import current_revision, downgrade, head_revision, make_engine, upgrade
from wsireview.cli import SUBCOMMANDS, CommandError, catalog_errors, hint, plural
from wsireview.leftovers import GRACE_SECONDS, find_leftovers, remove_leftovers


def register(sub) -> None:
    parser = sub.add_parser("db", help=SUBCOMMANDS["db"],
                            description="Catalog migrations. Opening a catalog upgrades it automatically; "
                            "these commands are for operators of a shared (PostgreSQL) catalog. "
                            "`check` finds workspace files that no catalog row owns; `prune` deletes older model "
                            "versions' per-patch score files.")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    up = actions.add_parser("upgrade", help="upgrade the catalog schema (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    actions.add_parser("current", help="print the catalog's schema revision and the newest one")
    down = actions.add_parser("downgrade", help="downgrade the schema (destroys data of dropped tables)")
    down.add_argument("revision")
    check = actions.add_parser(
        "check", help="list workspace files no catalog row owns (left by killed commands); --clean removes them",
        description="List files in the workspace that no catalog row owns: checkpoints without a model "
        "version, feature matrices without a feature set, thumbnails and masks without a slide, temporary "
        "files, and hidden folders of killed exports (.OUT.partial-*). Exit code 1 while any remain. "
        f"Files changed in the last {GRACE_SECONDS:.0f} s may belong to a running command and are kept.")
    check.add_argument("--clean", action="store_true", help="remove them")
    prune = actions.add_parser(
        "prune", help="delete the per-patch score files of all but the newest N model versions",
        description="Delete the per-patch score files (models/scores-N.npy) of every model version but the "
        "--keep newest. Each file holds a score for every patch of the cohort (about 28 bytes a patch); "
        "versions, checkpoints, queues, slide predictions and reviews stay. Pruned versions show "
        "\"scores pruned\" (their attention and probabilities are no longer shown or exported).")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="versions whose scores stay (at least 1)")
    parser.set_defaults(func=run)


def run(args, ctx) -> int:
    if args.db_action == "check":
        return check(args, ctx)
    if args.db_action == "prune":
        return prune(args, ctx)
    with catalog_errors(ctx.workspace.db_url):
        engine = make_engine(ctx.workspace.db_url)
        ctx.workspace.ensure()
        try:
            if args.db_action == "upgrade":
                upgrade(engine, args.revision, root=ctx.workspace.root)
                ctx.console.print(f"catalog at revision {current_revision(engine)}")
            elif args.db_action == "downgrade":
                downgrade(engine, args.revision, root=ctx.workspace.root)
                ctx.console.print(f"catalog at revision {current_revision(engine) or 'base'}")
            else:
                current, head = current_revision(engine), head_revision()
                state = "up to date" if current == head else "needs `wsireview db upgrade`"
                ctx.console.print(f"current: {current or 'base (empty)'}  head: {head}  ({state})")
        finally:
            engine.dispose()
    return 0


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} B"


def check(args, ctx) -> int:
    """Report (and with ``--clean`` remove) what no catalog row owns; 1 while anything remains."""
    leftovers = find_leftovers(ctx.catalog(create=False), ctx.workspace)
    if not leftovers:
        ctx.console.print("workspace clean: every file belongs to a catalog row")
        return 0
    removed = remove_leftovers(leftovers) if args.clean else []
    gone = {leftover.path for leftover in removed}
    table = Table(title=f"Files no catalog row owns in {ctx.workspace.root}")
    for column in ("kind", "path", "size", "state"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for leftover in leftovers:
        state = ("[green]removed[/]" if leftover.path in gone
                 else "[yellow]recent[/]" if leftover.recent else "")
        table.add_row(leftover.kind, escape(ctx.workspace.relative(leftover.path)), _megabytes(leftover.bytes), state)
    ctx.console.print(table)
    left = len(leftovers) - len(removed)
    size = _megabytes(sum(leftover.bytes for leftover in leftovers))
    if any(leftover.recent for leftover in leftovers):
        ctx.console.print(f"[yellow]recent[/]: changed in the last {GRACE_SECONDS:.0f} s (a running command may "
                          "still own it): left alone; check again later")
    if args.clean:
        ctx.console.print(f"removed {plural(len(removed), 'leftover')}; {left} left")
    else:
        ctx.console.print(f"{plural(len(leftovers), 'leftover')} ({size}); "
                          f"`{hint(args, 'db check --clean')}` removes them")
    return 1 if left else 0


def prune(args, ctx) -> int:
    """Delete older versions' score files and say what that freed."""
    from wsireview.catalog.score_files import prune_scores

    if args.keep < 1:
        raise CommandError("--keep must be at least 1: the latest version's scores show its queue", 2)
    pruned = prune_scores(ctx.catalog(create=False), args.keep)
    if not pruned.versions:
        ctx.console.print(f"nothing to prune: at most {plural(args.keep, 'version')} with score files")
        return 0
    versions = ", ".join(f"v{v}" for v in pruned.versions)
    ctx.console.print(f"pruned the scores of {plural(len(pruned.versions), 'version')} ({versions}): "
                      f"{plural(pruned.files, 'file')} deleted, {_megabytes(pruned.bytes)} freed; "
                      "their queues, predictions and reviews stay")
    return 0
