"""`wsireview serve`: the slide viewer in the browser (loopback by default, a token anywhere else)."""

from __future__ import annotations

import socket

from wsireview.cli import SUBCOMMANDS, CommandError, plural
from wsireview.serve.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_QUALITY, DEFAULT_WORKERS


def register(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help=SUBCOMMANDS["serve"],
        description=(
            "Serve the catalog's ready slides to a browser: a slide list, a Deep Zoom viewer (OpenSeadragon) with "
            "a scale bar, overlays (t tissue mask, h attention heatmap, g patch grid, q queue, v verdicts) and "
            "triage of the review queue with the terminal's keys (y n u a, z undo, space skip, ? keys); each "
            "verdict is saved with the reviewer and the seconds taken. Binds 127.0.0.1 unless --host says "
            "otherwise; on any other address a token is required (generated and printed with the URL, or --token)."
        ),
    )
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to bind (default {DEFAULT_HOST}; any other needs the token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--reviewer", metavar="NAME",
                        help="name recorded with every verdict (default: $WSIREVIEW_REVIEWER, else the login name)")
    parser.add_argument("--token", help="the token browsers must present (default: a random one on non-loopback hosts)")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                        help=f"JPEG quality of the tiles, 1-100 (default {DEFAULT_QUALITY})")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="worker processes serving tiles; they share the workspace's tile cache "
                             f"(default {DEFAULT_WORKERS}: one process's threads already render on every core)")
    parser.set_defaults(func=run)


def run(args, ctx) -> int:
    from wsireview.catalog import READY
    from wsireview.catalog.queries import slides_overview
    from wsireview.learn.reviews import default_reviewer
    from wsireview.serve.config import ServeConfig

    if not 1 <= args.quality <= 100:
        raise CommandError(f"--quality must be between 1 and 100, not {args.quality}", 2)
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535, not {args.port}", 2)
    if args.token is not None and not args.token.strip():
        raise CommandError("--token must not be empty", 2)
    if args.workers < 1:
        raise CommandError(f"--workers must be at least 1, not {args.workers}", 2)
    catalog = ctx.catalog(create=False)
    sock = bind(args.host, args.port)
    config = ServeConfig.for_bind(
        args.host, token=args.token, port=sock.getsockname()[1], quality=args.quality,
        reviewer=args.reviewer or default_reviewer(), workers=args.workers,
    )
    ready = sum(1 for s in slides_overview(catalog) if s.status == READY)
    ctx.console.print(f"Serving {plural(ready, 'ready slide')} to reviewer [b]{config.reviewer}[/] at", highlight=False)
    ctx.console.print(f"    {config.url()}", highlight=False, soft_wrap=True)
    if config.token:
        ctx.console.print("[dim]The token is required: keep the address private.[/]", highlight=False)
    ctx.console.print("[dim]Ctrl-C stops the server.[/]", highlight=False)
    serve(catalog, ctx.workspace, config, sock)
    return 0


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port or a foreign address is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on such sockets (else Nagle adds ~40 ms a response).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:  # the port is taken, or the address is not this machine's
        sock.close()
        raise CommandError(f"cannot serve on {host}:{port}: {error.strerror or error}") from error
    return sock


def serve(catalog, workspace, config, sock: socket.socket) -> None:
    """Run the viewer on ``sock`` until Ctrl-C: in this process, or in ``config.workers`` processes
    that share the socket (uvicorn's supervisor starts them, and restarts one that dies)."""
    from functools import partial

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from wsireview.serve.app import create_app, worker_app
    from wsireview.serve.tiles import TileSource

    TileSource(catalog, workspace, config).prune_disk_cache()
    if config.workers == 1:
        app = create_app(catalog, workspace, config)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[sock])
        return
    catalog.close()  # each worker opens its own
    settings = uvicorn.Config(partial(worker_app, workspace, config), factory=True, workers=config.workers,
                              log_level="warning", access_log=False)
    Multiprocess(settings, sockets=[sock]).run()
