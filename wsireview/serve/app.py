"""The web application: pages, JSON over the catalog's queries, Deep Zoom tiles, verdicts.

Every route calls a domain function (``catalog.queries``, ``catalog.overlays``,
``learn.reviews``); nothing here computes what the terminal app would compute differently.
Blocking work (catalog queries, reading and encoding tiles) runs in Starlette's thread pool,
never on the event loop.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wsireview.catalog import READY, VERDICTS, Catalog, open_catalog
from wsireview.catalog.claims import CLAIMS, claim_patches, release_claims
from wsireview.catalog.overlays import slide_overlays
from wsireview.catalog.progress import queue_progress
from wsireview.catalog.queries import SlideOverview, latest_model_version_id, queue_entries, slides_overview
from wsireview.learn.reviews import record_verdict, undo_last
from wsireview.serve.auth import GuardMiddleware
from wsireview.slides.magnification import MICRONS_PER_PIXEL_AT_1X
from wsireview.slides.reader import level0_mpp
from wsireview.serve.config import ServeConfig
from wsireview.serve.tiles import TileNotFound, TileSource
from wsireview.workspace import Workspace

STATIC = Path(__file__).parent / "static"
TILE_CACHE_CONTROL = "private, max-age=86400"
NO_STORE = {"Cache-Control": "no-store"}


def _json(data, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=NO_STORE)


def _error(message: str, status: int = 404) -> JSONResponse:
    return _json({"error": message}, status)


def _slide_json(s: SlideOverview) -> dict:
    # The terminal's rule for sizes and magnification: a plausible mpp, else the objective power's.
    um_per_px, source = level0_mpp(s.mpp, s.objective_power, (s.width, s.height) if s.width and s.height else None)
    return {
        "id": s.id, "name": s.name, "label": s.label, "probability": s.probability,
        "width": s.width, "height": s.height, "levels": s.levels, "mpp": s.mpp,
        "um_per_px": um_per_px, "um_per_px_source": source,
        "objective_power": s.objective_power, "vendor": s.vendor, "tissue_fraction": s.tissue_fraction,
        "patches": s.patches, "queued": s.queued, "reviewed": s.reviewed,
        "patch_size_level0": s.patch_size_level0,
        "thumbnail": f"/slides/{s.id}/thumbnail.png" if s.thumbnail_path else None,
        "mask": f"/slides/{s.id}/mask.png" if s.mask_path else None,
    }


def create_app(catalog: Catalog, workspace: Workspace, config: ServeConfig) -> Starlette:
    """The viewer over one catalog; ``config`` says who reviews and whether a token is required."""
    tiles = TileSource(catalog, workspace, config)

    def ready_slide(slide_id: int) -> SlideOverview | None:
        return next((s for s in slides_overview(catalog) if s.id == slide_id and s.status == READY), None)

    # -- pages ----------------------------------------------------------------------------------
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    async def viewer(request: Request) -> Response:
        return FileResponse(STATIC / "viewer.html", headers=NO_STORE)

    # -- catalog --------------------------------------------------------------------------------
    def api_session(request: Request) -> Response:
        return _json({"reviewer": config.reviewer, "model_version": latest_model_version_id(catalog),
                      "verdicts": list(VERDICTS), "microns_per_pixel_at_1x": MICRONS_PER_PIXEL_AT_1X})

    def api_slides(request: Request) -> Response:
        return _json([_slide_json(s) for s in slides_overview(catalog) if s.status == READY])

    def api_slide(request: Request) -> Response:
        slide_id = request.path_params["slide_id"]
        slide = ready_slide(slide_id)
        if slide is None:
            return _error(f"no ready slide {slide_id} in the catalog")
        try:
            levels = tiles.level_count(slide_id)
        except TileNotFound as error:
            return _error(str(error))
        return _json(dict(_slide_json(slide), dzi=f"/dz/{slide_id}.dzi", dz_levels=levels,
                          tile_size=config.tile_size, overlap=config.overlap))

    def api_overlays(request: Request) -> Response:
        slide_id = request.path_params["slide_id"]
        if ready_slide(slide_id) is None:
            return _error(f"no ready slide {slide_id} in the catalog")
        layers = slide_overlays(catalog, slide_id, reviewer=config.reviewer)
        return _json({
            "model_version": layers.model_version_id,
            "patches": {"id": layers.patch_ids, "x": layers.x, "y": layers.y, "size": layers.size,
                        "attention": layers.attention},
            "queued": layers.queued,
            "verdicts": [asdict(v) for v in layers.verdicts],
        })

    def api_queue(request: Request) -> Response:
        """The queue as this reviewer sees it (``claims.may_see``): the newest version's, or ``version``'s."""
        slide, version = request.query_params.get("slide"), request.query_params.get("version")
        if slide is not None and not slide.isdigit():
            return _error("slide must be a catalog id", 400)
        if version is not None and not version.isdigit():
            return _error("version must be a model version id", 400)
        entries = queue_entries(catalog, slide_id=int(slide) if slide else None,
                                model_version_id=int(version) if version else None, reviewer=config.reviewer)
        return _json([
            {"patch_id": e.patch_id, "queue_id": e.queue_id, "rank": e.rank, "reason": e.reason,
             "model_version_id": e.model_version_id, "slide_id": e.slide_id, "slide_name": e.slide_name,
             "slide_label": e.slide_label, "slide_probability": e.slide_probability,
             "x": e.x, "y": e.y, "size": e.size, "attention": e.attention, "attention_rank": e.attention_rank,
             "probability": e.probability, "verdict": e.verdict, "done": e.done, "reads": e.reads}
            for e in entries if e.slide_status == READY
        ])

    async def api_record(request: Request) -> Response:
        try:
            body = await request.json()
            patch_id = int(body["patch_id"])
            verdict = str(body["verdict"])
            seconds = float(body["seconds"]) if body.get("seconds") is not None else None
            model_version = int(body["model_version_id"]) if body.get("model_version_id") is not None else None
        except (ValueError, KeyError, TypeError):
            return _error("expected JSON with patch_id, verdict, seconds, model_version_id", 400)
        if verdict not in VERDICTS:
            return _error(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}", 400)
        try:
            review_id = await run_in_threadpool(
                record_verdict, catalog, patch_id, verdict, config.reviewer, seconds, model_version
            )
        except IntegrityError:
            return _error(f"no patch {patch_id} in the catalog", 400)
        return _json({"review_id": review_id, "patch_id": patch_id, "verdict": verdict, "reviewer": config.reviewer})

    async def api_claims(request: Request) -> Response:
        """Renew this reviewer's claims and top them up on a queue; answers what they hold to judge,
        the queue's progress (theirs and the team's) and the newest model version."""
        try:
            body = await request.json()
            version = int(body["model_version_id"])
            slide = int(body["slide"]) if body.get("slide") is not None else None
            exclude = {int(p) for p in body.get("exclude") or []}
            first = [int(p) for p in body.get("first") or []]
        except (ValueError, KeyError, TypeError):
            return _error("expected JSON with model_version_id, and optionally slide, exclude and first", 400)

        def claim() -> dict:
            claimed = claim_patches(catalog, config.reviewer, version, slide_id=slide, exclude=exclude, first=first)
            progress = queue_progress(catalog, version, slide)
            return {"claimed": claimed, "model_version_id": version, "latest_model_version": latest_model_version_id(catalog),
                    "progress": dict(progress.as_dict(), you=progress.yours(config.reviewer),
                                     text=progress.text(config.reviewer)),
                    "renew_every_seconds": CLAIMS.renew_every_seconds}

        return _json(await run_in_threadpool(claim))

    async def api_release(request: Request) -> Response:
        """Give back this reviewer's claims: all of them (leaving the page), or ``patch_ids`` (a skip)."""
        try:
            body = await request.json() if await request.body() else {}
            patch_ids = [int(p) for p in body["patch_ids"]] if body.get("patch_ids") is not None else None
        except (ValueError, KeyError, TypeError):
            return _error("expected JSON with optional patch_ids", 400)
        released = await run_in_threadpool(release_claims, catalog, config.reviewer, patch_ids)
        return _json({"released": released})

    def api_undo(request: Request) -> Response:
        review = undo_last(catalog, config.reviewer)
        if review is None:
            return _json({"undone": None})
        return _json({"undone": {"review_id": review.id, "patch_id": review.patch_id, "verdict": review.verdict}})

    # -- pictures from the workspace ------------------------------------------------------------
    def workspace_picture(request: Request) -> Response:
        slide = ready_slide(request.path_params["slide_id"])
        kind = request.path_params["kind"]
        if kind not in ("thumbnail", "mask"):
            return _error("not found")
        stored = None if slide is None else slide.thumbnail_path if kind == "thumbnail" else slide.mask_path
        path = workspace.absolute(stored)
        if path is None or not path.is_file():
            return _error(f"no {kind} for this slide")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})

    # -- Deep Zoom ------------------------------------------------------------------------------
    def dzi(request: Request) -> Response:
        try:
            xml = tiles.dzi(request.path_params["slide_id"])
        except TileNotFound as error:
            return _error(str(error))
        return Response(xml, media_type="application/xml", headers=NO_STORE)

    async def tile(request: Request) -> Response:
        p = request.path_params
        address = (p["slide_id"], p["level"], p["col"], p["row"])
        hit = tiles.cached(*address)  # a warm tile never leaves the event loop
        if hit is None:
            try:
                hit = await run_in_threadpool(tiles.tile_with_etag, *address)
            except TileNotFound as error:
                return _error(str(error))
        data, etag = hit
        headers = {"ETag": etag, "Cache-Control": TILE_CACHE_CONTROL}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    routes = [
        Route("/", index),
        Route("/slides/{slide_id:int}", viewer),
        Route("/review", viewer),
        Route("/api/session", api_session),
        Route("/api/slides", api_slides),
        Route("/api/slides/{slide_id:int}", api_slide),
        Route("/api/slides/{slide_id:int}/overlays", api_overlays),
        Route("/api/queue", api_queue),
        Route("/api/reviews", api_record, methods=["POST"]),
        Route("/api/undo", api_undo, methods=["POST"]),
        Route("/api/claims", api_claims, methods=["POST"]),
        Route("/api/claims/release", api_release, methods=["POST"]),
        Route("/slides/{slide_id:int}/{kind:str}.png", workspace_picture),
        Route("/dz/{slide_id:int}.dzi", dzi),
        Route("/dz/{slide_id:int}_files/{level:int}/{col:int}_{row:int}.jpeg", tile),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, config=config)])
    app.state.tiles = tiles
    return app



def worker_app(workspace: Workspace, config: ServeConfig) -> Starlette:
    """The app of one worker process (started by uvicorn's supervisor): its own catalog connection,
    open slides and caches; tiles rendered by one worker reach the others through the disk cache."""
    return create_app(open_catalog(workspace.db_url, migrate=False), workspace, config)
