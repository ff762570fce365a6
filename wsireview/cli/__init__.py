"""The `wsireview` command: parse arguments, call domain functions, print. Nothing else lives here.

Each subcommand is a module in this package with ``register(subparsers)``; the parser it adds sets
``func`` to a ``run(args, ctx) -> int`` function.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shlex
import sys
from dataclasses import dataclass, field
from typing import Iterator

from rich.console import Console

from wsireview import __version__
from wsireview.errors import WsireviewError
from wsireview.text import literal
from wsireview.workspace import Workspace

# One line of help per subcommand, for `wsireview --help`. Only the module of the subcommand being
# run is imported, so `status` does not pay for torch and `--help` stays instant.
SUBCOMMANDS = {
    "add": "add slides to the catalog (thumbnail, tissue mask, patch grid)",
    "retile": "cut a new patch grid (--patch-size, --mpp, --min-tissue) for slides already in the catalog",
    "status": "show the catalog: slides by status, patches, labels, model",
    "db": "catalog schema migrations (upgrade, current, downgrade); check for files no row owns; prune old scores",
    "demo": "generate a synthetic H&E cohort with known lesions (labels and ground truth included)",
    "embed": "compute patch features (resumable; `retrain` runs this for you)",
    "retrain": "train a new model version on all labels and verdicts, and queue patches to review",
    "evaluate": "simulate review rounds with known lesions and compare query strategies",
    "review": "review queued patches in the terminal app (triage screen)",
    "agreement": "how far reviewers agree: Cohen's kappa per pair with its confidence interval, Fleiss' kappa, confusion tables",
    "serve": "open the slide viewer in a browser: Deep Zoom, overlays, triage (loopback by default)",
    "export": "export reviewed patches (PNG folders, QuPath GeoJSON, CLAM h5, CSV)",
}
_GLOBAL_OPTIONS_WITH_VALUE = {"--workspace", "--db", "--graphics"}
# Subcommands whose module imports torch (2-3 s before anything else can happen).
_SLOW_TO_IMPORT = {"embed", "retrain", "evaluate"}


def _importing(name: str) -> contextlib.AbstractContextManager:
    """On a terminal, a spinner while a slow subcommand's module loads, so a silent start is explained."""
    console = Console(stderr=True)
    if name in _SLOW_TO_IMPORT and console.is_terminal:
        return console.status("loading torch...", spinner="dots")
    return contextlib.nullcontext()


def _chosen_subcommand(argv: list[str]) -> str | None:
    """The subcommand named on the command line, skipping global options and their values."""
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in _GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
            continue
        if token.startswith("-"):
            continue
        return token if token in SUBCOMMANDS else None
    return None


class CommandError(WsireviewError):
    """A command-line mistake (an option, a missing catalog): one line, and its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def print_error(console: Console, message: str) -> None:
    """A failure as the command line shows every one: a single ``error: ...`` line on stderr."""
    console.print(f"[red]error:[/] {literal(message)}", highlight=False)  # names from files: text, no escapes


def plural(count: int, noun: str) -> str:
    """``1 slide``, ``2 slides``, ``1 patch``, ``2 patches``: counts as a person writes them."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"


def hint(args: argparse.Namespace, words: str) -> str:
    """A command to suggest next, with the ``--workspace`` the user gave (else it would open ./data)."""
    workspace = getattr(args, "workspace", None)
    return f"wsireview --workspace {shlex.quote(workspace)} {words}" if workspace else f"wsireview {words}"


def _shown(url: str) -> str:
    """The catalog URL for a message, password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show it as typed
        return url


@contextlib.contextmanager
def catalog_errors(url: str) -> Iterator[None]:
    """Turn a catalog that cannot be opened (bad URL, missing driver, server down) into a CommandError."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    try:
        yield
    except ArgumentError as error:  # also NoSuchModuleError: an unknown database in the URL
        raise CommandError(f"cannot use the catalog URL {_shown(url)}: {str(error).splitlines()[0]}; check --db or "
                           "$WSIREVIEW_DB (e.g. postgresql+psycopg://user@host/wsireview)", 2) from error
    except ImportError as error:  # the URL names a driver that is not installed
        raise CommandError(f"cannot use the catalog URL {_shown(url)}: {error}; install its driver "
                           "(PostgreSQL: pip install 'wsireview[postgres]') or check --db", 2) from error
    except DBAPIError as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        raise CommandError(f"cannot open the catalog at {_shown(url)}: {reason}; check that the database is "
                           "reachable and the URL (--db or $WSIREVIEW_DB) is right") from error


@dataclass
class Context:
    """What every subcommand needs: the workspace, its catalog (opened on first use), a console."""

    workspace: Workspace
    console: Console = field(default_factory=Console)
    # Messages on stderr are never wrapped: an error stays one line, whatever the terminal width.
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))
    _catalog: object | None = None

    def catalog(self, create: bool = True):
        """The opened catalog. ``create=False`` refuses a SQLite catalog file that does not exist yet,
        so a mistyped ``--workspace`` fails instead of quietly starting an empty catalog."""
        if self._catalog is None:
            from wsireview.catalog import open_catalog
            from wsireview.catalog.db import sqlite_path

            path = sqlite_path(self.workspace.db_url)
            if not create and path is not None and not path.exists():
                option = "--workspace" if path.parent == self.workspace.root else "--db"
                raise CommandError(f"no catalog at {path}: add slides with `wsireview add` first, or check {option}")
            self.workspace.refuse_read_only(path)
            with catalog_errors(self.workspace.db_url):
                self._catalog = open_catalog(self.workspace.db_url, root=self.workspace.root)
            self.workspace.ensure()  # after: a catalog URL that fails leaves no workspace folder behind
        return self._catalog


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser when ``argv`` is None; else one where only the chosen subcommand is complete."""
    parser = argparse.ArgumentParser(
        prog="wsireview",
        # No abbreviated global options: the subcommand is found before parsing (to import only
        # its module), and `--work DIR status` would hide `status` from that scan.
        allow_abbrev=False,
        description=(
            "Review whole-slide images with a model that learns from your verdicts. "
            "Without a subcommand, opens the terminal app on the workspace."
        ),
        epilog="Workflow: add -> retrain (embeds, trains, queues patches) -> review -> retrain -> export. "
        "Run `wsireview COMMAND --help` for each step.",
    )
    parser.add_argument("--version", action="version", version=f"wsireview {__version__}")
    parser.add_argument(
        "--workspace", metavar="DIR",
        help="folder for the catalog, thumbnails, masks, features, models and exports "
             "(default: $WSIREVIEW_WORKSPACE or ./data)",
    )
    parser.add_argument(
        "--db", metavar="URL",
        help="SQLAlchemy URL of the catalog, e.g. postgresql+psycopg://user@host/wsireview "
             "(default: $WSIREVIEW_DB or sqlite in the workspace)",
    )
    parser.add_argument("--graphics", choices=["auto", "halfblock", "kitty", "sixel"], default=None,
                        help="how the app draws images (default auto: Kitty graphics or Sixel when the terminal "
                             "answers that it speaks them, else colour half-blocks, always inside tmux/screen "
                             "and over pipes; $WSIREVIEW_GRAPHICS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_subcommand(argv) if argv is not None else None
    for name, help_text in SUBCOMMANDS.items():
        if argv is None or name == chosen:
            with _importing(name if name == chosen else ""):
                module = importlib.import_module(f"wsireview.cli.{name}_cmd")
            module.register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        ctx = Context(workspace=Workspace.resolve(args.workspace, args.db))
    except WsireviewError as error:  # e.g. --workspace names a file
        print_error(Console(stderr=True, soft_wrap=True), str(error))
        return error.code
    func = getattr(args, "func", None)
    try:
        if func is None:
            from wsireview.cli.review_cmd import open_app

            return open_app(args, ctx)
        return int(func(args, ctx) or 0)
    except WsireviewError as error:  # CommandError and every domain error: one line, no traceback
        print_error(ctx.err, str(error))
        return error.code
    except KeyboardInterrupt:
        ctx.err.print("[yellow]Interrupted.[/] Work finished before the interruption is kept.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
