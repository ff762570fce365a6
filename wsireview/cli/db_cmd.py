"""`wsireview db upgrade|downgrade|current`: catalog migrations for operators."""

from __future__ import annotations

from wsireview.catalog.db import current_revision, downgrade, head_revision, make_engine, upgrade
from wsireview.cli import SUBCOMMANDS, catalog_errors


def register(sub) -> None:
    parser = sub.add_parser("db", help=SUBCOMMANDS["db"],
                            description="Catalog migrations. Opening a catalog upgrades it automatically; "
                            "these commands are for operators of a shared (PostgreSQL) catalog.")
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION", required=True)
    up = actions.add_parser("upgrade", help="upgrade the catalog schema (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    actions.add_parser("current", help="print the catalog's schema revision and the newest one")
    down = actions.add_parser("downgrade", help="downgrade the schema (destroys data of dropped tables)")
    down.add_argument("revision")
    parser.set_defaults(func=run)


def run(args, ctx) -> int:
    with catalog_errors(ctx.workspace.db_url):
        engine = make_engine(ctx.workspace.db_url)
        ctx.workspace.ensure()
        try:
            if args.db_action == "upgrade":
                upgrade(engine, args.revision)
                ctx.console.print(f"catalog at revision {current_revision(engine)}")
            elif args.db_action == "downgrade":
                downgrade(engine, args.revision)
                ctx.console.print(f"catalog at revision {current_revision(engine) or 'base'}")
            else:
                current, head = current_revision(engine), head_revision()
                state = "up to date" if current == head else "needs `wsireview db upgrade`"
                ctx.console.print(f"current: {current or 'base (empty)'}  head: {head}  ({state})")
        finally:
            engine.dispose()
    return 0
