"""`wsireview serve`: the token rule, slides by catalog id only, Deep Zoom tiles that are the slide's
pixels, overlays and verdicts read back from the catalog, and the pages in a real headless Chromium.

One workspace for the module: the demo cohort, a plain-image slide and a real Aperio slide, after
one `retrain` with the fast stain-stats encoder.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from sqlalchemy import select, update
from starlette.testclient import TestClient

from wsireview.catalog import READY, Patch, Review, Slide, open_catalog
from wsireview.catalog.claims import CLAIMS, claim_patches, live_claims
from wsireview.catalog.progress import queue_progress
from wsireview.catalog.queries import latest_model_version_id, queue_entries
from wsireview.catalog.score_files import version_scores
from wsireview.ingest import add_paths
from wsireview.serve.app import create_app
from wsireview.serve.auth import COOKIE, presented_token, token_accepted
from wsireview.serve.config import ServeConfig, is_loopback
from wsireview.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
LOCAL = "http://127.0.0.1"
WRITE = {"X-WSIReview": "1"}


@pytest.fixture(scope="module")
def served(demo_workspace_template, real_slides, tmp_path_factory):
    """A retrained demo workspace plus a plain image, a real SVS, a slide to lose and a corrupt one."""
    from wsireview.learn.round import retrain
    from wsireview.learn.spec import RoundSpec

    root = tmp_path_factory.mktemp("serve") / "ws"
    shutil.copytree(demo_workspace_template.root, root)
    ws = Workspace.resolve(root)
    extra = root / "extra"
    extra.mkdir()
    for name in ("kidney-48-5.tif", "cmu-1-small-region.svs", "unreadable-tile.svs"):
        shutil.copy(real_slides / name, extra / name)
    shutil.copy(real_slides / "boxes-pyramid.tiff", extra / "to-lose.tiff")
    catalog = open_catalog(ws.db_url)
    add_paths(catalog, ws, [extra])
    retrain(catalog, ws, RoundSpec(encoder="stain-stats", budget=12, seed=0))
    yield ws, catalog
    catalog.close()


def slide_id(catalog, name: str) -> int:
    with catalog.session() as session:
        return session.scalar(select(Slide.id).where(Slide.name == name))


def client_for(served, **settings) -> TestClient:
    ws, catalog = served
    config = ServeConfig.for_bind(**{"host": "127.0.0.1", "reviewer": "tester", **settings})
    return TestClient(create_app(catalog, ws, config), base_url=LOCAL)


# -- who may use it ----------------------------------------------------------------------------------

def test_token_rule_and_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    assert ServeConfig.for_bind("127.0.0.1").token is None
    public = ServeConfig.for_bind("0.0.0.0")
    assert public.token and len(public.token) >= 32 and public.token != ServeConfig.for_bind("0.0.0.0").token
    assert public.url().endswith(f":8000/?token={public.token}")
    assert ServeConfig.for_bind("0.0.0.0", token="given").token == "given"
    assert token_accepted(None, None)
    assert not token_accepted("secret", None) and not token_accepted("secret", "secreT")
    assert token_accepted("secret", presented_token({}, "token=secret")[0])
    assert presented_token({"authorization": "Bearer abc"}, "") == ("abc", False)
    assert presented_token({"cookie": f"other=1; {COOKIE}=xyz"}, "") == ("xyz", False)


def test_non_loopback_bind_refuses_requests_without_the_token(served):
    """A server configured for 0.0.0.0 (no real bind needed: the rule is in the app) answers 401 to
    every route without the token, and serves with it from the query, the cookie or a header."""
    client = client_for(served, host="0.0.0.0")
    token = client.app.state.tiles.config.token
    assert token
    for path in ("/", "/api/slides", "/dz/1.dzi", "/dz/1_files/0/0_0.jpeg", "/static/viewer.js", "/review"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "token" in response.text and "Traceback" not in response.text
    assert client.post("/api/reviews", json={}, headers=WRITE).status_code == 401
    assert client.get("/api/slides", params={"token": "wrong"}).status_code == 401

    first = client.get("/", params={"token": token})
    assert first.status_code == 200 and "wsireview" in first.text
    assert COOKIE in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
    assert client.get("/api/slides").status_code == 200  # the cookie set above
    fresh = client_for(served, host="0.0.0.0", token="given-token")
    assert fresh.get("/api/slides", headers={"Authorization": "token given-token"}).status_code == 200
    assert fresh.get("/api/slides").status_code == 401


def test_loopback_needs_no_token_but_refuses_foreign_hosts_and_cross_site_writes(served):
    client = client_for(served)
    assert client.get("/api/slides").status_code == 200
    assert client.get("/api/slides", headers={"Host": "evil.example:8000"}).status_code == 403
    assert client.get("/api/slides", headers={"Host": "localhost:8000"}).status_code == 200
    refused = client.post("/api/undo")  # no X-WSIReview header: a form or fetch from another site
    assert refused.status_code == 403


# -- slides by catalog id only -----------------------------------------------------------------------

def test_slides_are_reached_by_catalog_id_only(served):
    ws, catalog = served
    client = client_for(served)
    listed = client.get("/api/slides").json()
    with catalog.session() as session:
        ready = session.scalars(select(Slide.name).where(Slide.status == READY)).all()
    assert sorted(s["name"] for s in listed) == sorted(ready)
    assert "unreadable-tile.svs" not in {s["name"] for s in listed}  # failed at ingest: not served
    secret = ws.root / "catalog.sqlite"
    for path in (
        "/dz/../catalog.sqlite", "/dz/..%2Fcatalog.sqlite", "/dz/1_files/..%2F..%2Fcatalog.sqlite",
        f"/dz/{secret}", "/dz/%2Fetc%2Fpasswd.dzi", "/static/../tiles.py", "/static/%2e%2e/tiles.py",
        "/static/%2e%2e%2ftiles.py", "/static/..%5ctiles.py", "/slides/1/../../catalog.sqlite",
        "/dz/abc.dzi", "/dz/-1.dzi", "/dz/999.dzi", "/slides/1/label.png", "/slides/1/macro.png",
        "/slides/1/associated/label.jpeg", "/api/slides/999",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text and "SQLite" not in response.text, path
    failed = slide_id(catalog, "unreadable-tile.svs")
    assert "not ready" in client.get(f"/dz/{failed}.dzi").json()["error"]


def test_static_files_never_follow_a_symlink_out_of_the_package(served, tmp_path, monkeypatch):
    """A link planted among the page's files (here in a copy of them) does not serve what it points to."""
    import wsireview.serve.app as serve_app

    static = tmp_path / "static"
    shutil.copytree(serve_app.STATIC, static)
    outside = tmp_path / "secret.txt"
    outside.write_text("patient data")
    (static / "leak.txt").symlink_to(outside)
    (static / "linked").symlink_to(tmp_path)
    monkeypatch.setattr(serve_app, "STATIC", static)
    client = client_for(served)
    assert client.get("/static/viewer.js").status_code == 200
    for path in ("/static/leak.txt", "/static/linked/secret.txt"):
        response = client.get(path)
        assert response.status_code == 404 and "patient" not in response.text, path


def test_bad_tile_requests_answer_404_and_the_server_keeps_serving(served):
    ws, catalog = served
    client = client_for(served)
    sid = slide_id(catalog, "demo-000.tiff")
    levels = openslide.deepzoom.DeepZoomGenerator(openslide.OpenSlide(str(_slide_path(served, sid))),
                                                  254, 1, limit_bounds=False).level_count
    for path in (f"/dz/{sid}_files/{levels}/0_0.jpeg", f"/dz/{sid}_files/{levels - 1}/999_0.jpeg",
                 f"/dz/{sid}_files/{levels - 1}/0_999.jpeg", "/dz/999_files/0/0_0.jpeg",
                 f"/dz/{sid}_files/x/0_0.jpeg", f"/dz/{sid}_files/0/0_0.png"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "Traceback" not in response.text
    # Corrupt tile data: a slide whose pixels cannot be read, made ready by hand.
    broken = slide_id(catalog, "unreadable-tile.svs")
    with catalog.session() as session:
        session.execute(update(Slide).where(Slide.id == broken).values(status=READY))
    try:
        response = client.get(f"/dz/{broken}_files/4/0_0.jpeg")  # its full resolution
        assert response.status_code == 404 and "cannot be read" in response.json()["error"]
    finally:
        with catalog.session() as session:
            session.execute(update(Slide).where(Slide.id == broken).values(status="failed"))
    assert client.get(f"/dz/{sid}_files/{levels - 1}/0_0.jpeg").status_code == 200


def test_a_slide_whose_file_went_missing_answers_a_clear_error(served):
    ws, catalog = served
    client = client_for(served)
    sid = slide_id(catalog, "to-lose.tiff")
    path = _slide_path(served, sid)
    path.rename(path.with_suffix(".moved"))
    try:
        info = client.get(f"/api/slides/{sid}")
        assert info.status_code == 404 and "missing" in info.json()["error"] and "to-lose.tiff" in info.json()["error"]
        assert "missing" in client.get(f"/dz/{sid}_files/0/0_0.jpeg").json()["error"]
        assert client.get("/api/slides").status_code == 200
    finally:
        path.with_suffix(".moved").rename(path)


# -- tiles ---------------------------------------------------------------------------------------------

def _slide_path(served, sid: int) -> Path:
    ws, catalog = served
    with catalog.session() as session:
        return ws.absolute(session.scalar(select(Slide.path).where(Slide.id == sid)))


def _region(path: Path, x: int, y: int, w: int, h: int) -> np.ndarray:
    with openslide.open_slide(str(path)) as osr:
        rgba = osr.read_region((x, y), 0, (w, h))
    rgb = Image.new("RGB", rgba.size, (255, 255, 255))
    rgb.paste(rgba, mask=rgba.getchannel("A"))
    return np.asarray(rgb, dtype=np.float32)


def _blocks(rgb: np.ndarray, k: int = 4) -> np.ndarray:
    h, w = rgb.shape[0] // k * k, rgb.shape[1] // k * k
    return rgb[:h, :w].reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("name", ["demo-001.tiff", "cmu-1-small-region.svs", "kidney-48-5.tif"])
def test_full_resolution_tiles_are_the_slides_pixels(served, name):
    """A top-level tile decodes to the level-0 region it stands for (JPEG q90: a few grey levels off),
    and a neighbouring region does not match it (so the check can fail)."""
    ws, catalog = served
    client = client_for(served)
    sid = slide_id(catalog, name)
    path = _slide_path(served, sid)
    dzi = client.get(f"/dz/{sid}.dzi")
    assert dzi.status_code == 200 and 'TileSize="254"' in dzi.text and 'Overlap="1"' in dzi.text
    with openslide.open_slide(str(path)) as osr:
        width, height = osr.dimensions
    assert f'Width="{width}"' in dzi.text and f'Height="{height}"' in dzi.text  # the whole level-0 plane
    top = client.get(f"/api/slides/{sid}").json()["dz_levels"] - 1
    with openslide.open_slide(str(path)) as osr:  # the darkest place of the thumbnail: tissue
        thumb = np.asarray(osr.get_thumbnail((64, 64)).convert("L"), dtype=np.float32)
    ty, tx = np.unravel_index(np.argmin(thumb), thumb.shape)
    col, row = int((tx + 0.5) * width / thumb.shape[1]) // 254, int((ty + 0.5) * height / thumb.shape[0]) // 254
    response = client.get(f"/dz/{sid}_files/{top}/{col}_{row}.jpeg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    tile = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)
    x0, y0 = max(0, col * 254 - 1), max(0, row * 254 - 1)  # one pixel of overlap on each inner side
    expected = _region(path, x0, y0, tile.shape[1], tile.shape[0])
    assert tile.shape[0] <= 256 and tile.shape[1] <= 256
    assert tile.std() > 5  # not a blank tile
    error = np.abs(_blocks(tile) - _blocks(expected)).mean()  # 4 x 4 means: JPEG's noise averages out
    assert error < 3.0
    shifted = _region(path, x0 + 3, y0 + 2, tile.shape[1], tile.shape[0])  # a few pixels off: clearly worse
    assert np.abs(_blocks(tile) - _blocks(shifted)).mean() > 1.5 * error


def test_tiles_carry_etags_and_quality(served):
    ws, catalog = served
    sid = slide_id(catalog, "demo-002.tiff")
    client = client_for(served)
    top = client.get(f"/api/slides/{sid}").json()["dz_levels"] - 1
    url = f"/dz/{sid}_files/{top}/3_3.jpeg"
    first = client.get(url)
    assert first.headers["etag"] and "max-age" in first.headers["cache-control"]
    again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    low = client_for(served, quality=30).get(url)
    assert low.status_code == 200 and len(low.content) < 0.6 * len(first.content)
    assert low.headers["etag"] != first.headers["etag"]


def _all_tiles(dz, levels: int = 99):
    """Every tile of the ``levels`` highest Deep Zoom levels."""
    return [(level, (col, row)) for level in range(max(0, dz.level_count - levels), dz.level_count)
            for col in range(dz.level_tiles[level][0]) for row in range(dz.level_tiles[level][1])]


def test_rendered_tiles_are_deepzoom_generators_pixels(real_slides, tmp_path):
    """render_tile skips compositing only where a region is opaque: the tiles of a real SVS (its 3
    highest levels: full resolution and downsampled), of a pyramid with a colour profile and of an
    image with transparent pixels equal get_tile's."""
    from openslide.deepzoom import DeepZoomGenerator

    from wsireview.serve.tiles import _OpenSlide, render_tile

    rgba = np.zeros((300, 400, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[50:120, 60:200, 3] = 0  # a transparent hole: white there, as get_tile composites it
    rgba[150:200, :, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "holes.png")
    transparent_seen = 0
    for path in (real_slides / "cmu-1-small-region.svs", real_slides / "boxes-pyramid.tiff", tmp_path / "holes.png"):
        osr = openslide.open_slide(str(path))
        dz = DeepZoomGenerator(osr, 254, 1, limit_bounds=False)
        opened = _OpenSlide(None, osr, dz, "v")
        for level, address in _all_tiles(dz, 3 if path.suffix == ".svs" else 99):
            ours, theirs = render_tile(opened, level, address), dz.get_tile(level, address)
            assert ours.mode == theirs.mode == "RGB" and ours.size == theirs.size
            assert ours.tobytes() == theirs.tobytes(), (path.name, level, address)
            assert ours.info.get("icc_profile") == theirs.info.get("icc_profile")
            region = osr.read_region(*dz.get_tile_coordinates(level, address))
            transparent_seen += region.getchannel("A").getextrema() != (255, 255)
        if path.suffix == ".tiff":
            assert theirs.info.get("icc_profile")  # the profile case is really exercised
    assert transparent_seen > 0  # and so is the compositing one


@pytest.fixture
def one_slide_workspace(real_slides, tmp_path):
    """A fresh workspace with one small pyramidal slide, for tests that change its file."""
    ws = Workspace.resolve(tmp_path / "ws").ensure()
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(real_slides / "kidney-48-5.tif", src / "slide.tif")
    catalog = open_catalog(ws.db_url)
    add_paths(catalog, ws, [src])
    yield ws, catalog, src / "slide.tif"
    catalog.close()


def test_disk_cache_serves_identical_bytes_to_another_process_and_a_changed_file_invalidates_it(
    one_slide_workspace, real_slides, monkeypatch
):
    from wsireview.serve import tiles as tiles_module
    from wsireview.serve.tiles import TileSource

    ws, catalog, path = one_slide_workspace
    sid = slide_id(catalog, "slide.tif")
    config = ServeConfig(reviewer="tester")
    first = TileSource(catalog, ws, config)
    top = first.level_count(sid) - 1
    data, etag = first.tile_with_etag(sid, top, 1, 1)
    cached = list(ws.tile_cache.rglob("*.jpeg"))
    assert len(cached) == 1 and cached[0].read_bytes() == data

    def no_rendering(*args):
        raise AssertionError("rendered although the disk cache has the tile")

    # Another worker (a new TileSource: nothing in memory) gets the same bytes from disk, without rendering.
    monkeypatch.setattr(tiles_module, "render_tile", no_rendering)
    assert TileSource(catalog, ws, config).tile_with_etag(sid, top, 1, 1) == (data, etag)
    monkeypatch.undo()

    # The slide file replaced in place (same name, other pixels): its cached tiles no longer count.
    shutil.copy(real_slides / "cmu-1-small-region.svs", path)
    later = TileSource(catalog, ws, config)
    later.prune_disk_cache()
    assert not cached[0].exists()  # the old version's folder went at start
    new_data, new_etag = later.tile_with_etag(sid, top, 1, 1)
    assert new_etag != etag and new_data != data
    with openslide.open_slide(str(path)) as osr:
        from openslide.deepzoom import DeepZoomGenerator

        fresh = DeepZoomGenerator(osr, 254, 1, limit_bounds=False).get_tile(top, (1, 1))
    decoded = np.asarray(Image.open(io.BytesIO(new_data)).convert("RGB"), dtype=np.float32)
    assert np.abs(decoded - np.asarray(fresh, dtype=np.float32)).mean() < 3.0  # the new file's pixels

    # Another quality is another version too; the size limit drops the oldest tiles first.
    assert TileSource(catalog, ws, ServeConfig(quality=40)).tile_with_etag(sid, top, 1, 1)[0] != new_data
    for col in range(3):
        later.tile_with_etag(sid, top, col, 0)
    tiles_now = sorted(ws.tile_cache.rglob("*.jpeg"), key=lambda p: p.stat().st_mtime_ns)
    newest = tiles_now[-1]
    later.disk.prune(later.current_versions(), max_bytes=newest.stat().st_size)
    assert [p for p in ws.tile_cache.rglob("*.jpeg")] == [newest]


def test_disk_cache_writes_whole_files_or_nothing(tmp_path):
    from wsireview.serve.tile_cache import DiskTileCache

    cache = DiskTileCache(tmp_path / "cache")
    cache.put(3, "abc", 5, 1, 2, b"\xff\xd8jpeg")
    assert cache.get(3, "abc", 5, 1, 2) == b"\xff\xd8jpeg" and cache.get(3, "abc", 5, 2, 1) is None
    assert [p.name for p in cache.path(3, "abc", 5, 1, 2).parent.iterdir()] == ["1_2.jpeg"]  # no temporary left
    (cache.path(3, "abc", 5, 1, 2).parent / ".x.part").write_bytes(b"half")  # an interrupted write
    (tmp_path / "cache" / "4-old").mkdir()
    cache.prune({(3, "abc")}, max_bytes=1 << 20)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == ["1_2.jpeg", "3-abc", "5"]
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    unwritable = DiskTileCache(tmp_path / "blocked")
    unwritable.put(4, "new", 0, 0, 0, b"data")  # not kept, and no error: the tile is still served
    assert unwritable.get(4, "new", 0, 0, 0) is None


@pytest.mark.slow
def test_serve_command_with_two_workers_shares_the_disk_cache_and_stops_on_ctrl_c(one_slide_workspace):
    """Two worker processes serve on the one port; every tile either renders lands in the workspace's
    cache (what the other serves from); Ctrl-C stops the parent and its workers."""
    import signal
    import subprocess
    import sys
    import urllib.request

    ws, catalog, _ = one_slide_workspace
    sid = slide_id(catalog, "slide.tif")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "wsireview", "--workspace", str(ws.root), "serve", "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, COLUMNS="200"),
    )
    try:
        deadline, tiles = time.monotonic() + 90, {}
        while len(tiles) < 6 and time.monotonic() < deadline:  # keep-alive off: each request a new connection
            col = len(tiles)
            try:
                with urllib.request.urlopen(f"{LOCAL}:{port}/dz/{sid}_files/11/{col}_0.jpeg", timeout=5) as answer:
                    tiles[col] = answer.read()
            except OSError:
                time.sleep(0.3)
        assert len(tiles) == 6, "the workers did not answer"
        for col, data in tiles.items():
            assert data[:2] == b"\xff\xd8"
            assert list(ws.tile_cache.glob(f"{sid}-*/11/{col}_0.jpeg"))[0].read_bytes() == data
        workers = subprocess.run(["pgrep", "-P", str(server.pid), "-f", "spawn_main"], capture_output=True, text=True)
        assert len(workers.stdout.split()) == 2
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0].decode()
        assert server.returncode == 0 and "Traceback" not in output, output
        assert f"http://127.0.0.1:{port}/" in output
        for pid in workers.stdout.split():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


# -- overlays and verdicts ----------------------------------------------------------------------------

def test_overlays_are_the_catalogs_patches_attention_and_queue_in_level0_pixels(served):
    ws, catalog = served
    sid = slide_id(catalog, "demo-001.tiff")
    data = client_for(served).get(f"/api/slides/{sid}/overlays").json()
    mv = latest_model_version_id(catalog)
    assert data["model_version"] == mv
    with catalog.session() as session:
        patches = session.execute(
            select(Patch.id, Patch.x, Patch.y, Patch.size).where(Patch.slide_id == sid).order_by(Patch.id)).all()
    scores = version_scores(catalog, mv).lookup(r[0] for r in patches)
    rows = [(*r, scores[r[0]].attention) for r in patches]
    p = data["patches"]
    assert p["id"] == [r[0] for r in rows] and len(rows) > 100
    assert p["x"] == [r[1] for r in rows] and p["y"] == [r[2] for r in rows] and p["size"] == [r[3] for r in rows]
    assert p["attention"] == pytest.approx([r[4] for r in rows])
    assert data["queued"] == [e.patch_id for e in queue_entries(catalog, slide_id=sid)]


def test_verdicts_go_through_the_domain_function_with_reviewer_and_seconds(served):
    ws, catalog = served
    client = client_for(served, reviewer="api-tester")
    sid = slide_id(catalog, "demo-000.tiff")
    with catalog.session() as session:
        patch_id = session.scalars(select(Patch.id).where(Patch.slide_id == sid).order_by(Patch.id)).first()
    body = {"patch_id": patch_id, "verdict": "artifact", "seconds": 2.5, "model_version_id": None}
    saved = client.post("/api/reviews", json=body, headers=WRITE).json()
    with catalog.session() as session:
        review = session.get(Review, saved["review_id"])
        assert (review.patch_id, review.verdict, review.reviewer, review.seconds_taken) == \
            (patch_id, "artifact", "api-tester", 2.5)
    overlays = client.get(f"/api/slides/{sid}/overlays").json()
    assert {"patch_id": patch_id, "verdict": "artifact", "reviewer": "api-tester",
            "review_id": saved["review_id"]} in overlays["verdicts"]
    assert client.post("/api/reviews", json=dict(body, verdict="maybe"), headers=WRITE).status_code == 400
    assert client.post("/api/reviews", json=dict(body, patch_id=10**9), headers=WRITE).status_code == 400
    assert client.post("/api/reviews", content=b"{", headers=WRITE).status_code == 400
    undone = client.post("/api/undo", headers=WRITE).json()["undone"]
    assert undone["review_id"] == saved["review_id"]
    with catalog.session() as session:
        assert session.get(Review, saved["review_id"]).undone_at is not None
    assert client.post("/api/undo", headers=WRITE).json() == {"undone": None}


# -- in a real browser ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_reviewers_in_the_browser_get_different_patches_and_both_counts(served):
    ws, catalog = served
    anna, ben = client_for(served, reviewer="web-anna"), client_for(served, reviewer="web-ben")
    version = latest_model_version_id(catalog)
    claim = {"model_version_id": version}
    try:
        a = anna.post("/api/claims", json=claim, headers=WRITE).json()
        b = ben.post("/api/claims", json=claim, headers=WRITE).json()
        assert len(a["claimed"]) == len(b["claimed"]) == CLAIMS.batch
        assert not set(a["claimed"]) & set(b["claimed"])
        assert a["claimed"] == claim_patches(catalog, "web-anna", version)  # the terminal's function
        assert not {e["patch_id"] for e in ben.get("/api/queue").json()} & set(a["claimed"])
        verdict = {"patch_id": a["claimed"][0], "verdict": "lesion", "seconds": 1.0, "model_version_id": version}
        assert anna.post("/api/reviews", json=verdict, headers=WRITE).status_code == 200
        progress = ben.post("/api/claims", json=claim, headers=WRITE).json()["progress"]
        expected = queue_progress(catalog, version)
        assert (progress["you"], progress["reviewed_by_team"]) == (0, expected.team) and expected.team >= 1
        assert progress["text"] == f"you 0 · team {expected.team}/{expected.queued} reviewed"
        skipped = {"patch_ids": [b["claimed"][0]]}
        assert ben.post("/api/claims/release", json=skipped, headers=WRITE).json() == {"released": 1}
        assert ben.post("/api/claims", json=dict(claim, model_version_id="x"), headers=WRITE).status_code == 400
    finally:
        anna.post("/api/undo", headers=WRITE)
        for client in (anna, ben):
            client.post("/api/claims/release", headers=WRITE)
    assert not [c for c in live_claims(catalog) if c.reviewer in ("web-anna", "web-ben")]


@pytest.fixture(scope="module")
def browser_server(served):
    """The viewer on loopback (a free port) in a thread, and headless Chromium (Debian's) driven by playwright."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
        pytest.skip("no /usr/bin/chromium: apt-get install -y chromium")
    import uvicorn
    from playwright.sync_api import sync_playwright

    ws, catalog = served
    port = _free_port()
    config = ServeConfig.for_bind("127.0.0.1", port=port, reviewer="browser-tester")
    server = uvicorn.Server(uvicorn.Config(create_app(catalog, ws, config), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield f"http://127.0.0.1:{port}", browser
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(browser_server):
    base, browser = browser_server
    context = browser.new_context(viewport={"width": 1200, "height": 800}, base_url=base)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == []


def _overlay_pixels(page) -> int:
    """How many pixels of the overlay canvas are drawn on."""
    return page.evaluate("""() => {
        const c = document.getElementById('overlay-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;
    }""")


def _tissue_share(png: bytes) -> float:
    """The share of H&E-coloured pixels (pink or purple: red and blue above green) in a screenshot."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((r - g > 25) & (b - g > 10)).mean())


def test_browser_slide_list_viewer_tiles_and_overlay_toggle(served, page):
    ws, catalog = served
    page.goto("/")
    page.wait_for_selector("#slides tbody tr")
    names = page.locator("a.slide-link").all_text_contents()
    assert "demo-001.tiff" in names and "kidney-48-5.tif" in names and "unreadable-tile.svs" not in names

    page.locator("a.slide-link", has_text="demo-001.tiff").click()
    page.wait_for_url("**/slides/*")
    page.wait_for_function("() => document.getElementById('scale-text').textContent.includes('µm')")
    page.wait_for_selector("body[data-tiles=loaded]")
    viewer = page.locator("#osd")
    shot = viewer.screenshot()
    assert _tissue_share(shot) > 0.2  # tissue drawn from the tiles, not a blank canvas
    # The terminal's rule: 10 µm per pixel at 1x, from the slide's 0.5 µm/px.
    magnification = page.locator("#magnification").text_content()
    shown_um = float(magnification.split("·")[1].split("µm/px")[0])
    assert float(magnification.split("x")[0]) == pytest.approx(10 / shown_um, rel=0.05)

    assert _overlay_pixels(page) == 0
    page.keyboard.press("h")  # the attention heatmap, by key
    assert page.locator("button[data-layer=heatmap]").get_attribute("class").split().count("on") == 1
    heat = _overlay_pixels(page)
    assert heat > 1000
    for _ in range(4):  # threshold 0.2 -> 0 by key: every scored patch drawn
        page.keyboard.press("[")
    assert page.locator("#threshold-value").text_content() == "0.00"
    assert _overlay_pixels(page) > 3 * heat
    page.locator("button[data-layer=heatmap]").click()  # and off again, by button
    assert _overlay_pixels(page) == 0
    page.keyboard.press("t")
    assert _overlay_pixels(page) > 1000  # the tissue mask
    assert viewer.screenshot() != shot


def test_browser_triage_of_five_patches_records_five_verdicts_and_undo(served, page):
    ws, catalog = served
    page.goto("/review")
    page.wait_for_function("() => /^you \\d+ · team \\d+\\/\\d+ reviewed/.test(document.getElementById('progress').textContent)")
    start = int(page.locator("#progress").text_content().split()[1])
    # The tiles under the next patch are fetched while the first one is on screen.
    pending = [e for e in queue_entries(catalog) if e.verdict is None]
    following = pending[1]
    top = client_for(served).get(f"/api/slides/{following.slide_id}").json()["dz_levels"] - 1
    ahead = (f"/dz/{following.slide_id}_files/{top}/{(following.x + following.size // 2) // 254}_"
             f"{(following.y + following.size // 2) // 254}.jpeg")
    page.wait_for_function("(url) => performance.getEntriesByType('resource').some((r) => r.name.endsWith(url))",
                           arg=ahead)
    keys = ["y", "n", "u", "a", "y"]
    shown: list[str] = []
    for i, key in enumerate(keys):
        shown.append(page.locator("#patch-info").text_content())
        page.wait_for_timeout(150)  # the reviewer looks at the patch
        page.keyboard.press(key)
        page.wait_for_function(
            f"() => document.getElementById('progress').textContent.startsWith('you {start + i + 1} ')")
    assert len(set(shown)) == 5  # each key moved on to another patch
    with catalog.session() as session:
        reviews = session.scalars(
            select(Review).where(Review.reviewer == "browser-tester").order_by(Review.id)).all()
    assert [r.verdict for r in reviews] == ["lesion", "not_lesion", "unsure", "artifact", "lesion"]
    assert all(r.undone_at is None and r.seconds_taken > 0.1 for r in reviews)
    queued = {e.patch_id: e for e in queue_entries(catalog)}
    assert all(r.patch_id in queued and r.model_version_id == queued[r.patch_id].model_version_id for r in reviews)

    page.keyboard.press("z")
    page.wait_for_function(f"() => document.getElementById('progress').textContent.startsWith('you {start + 4} ')")
    with catalog.session() as session:
        assert session.get(Review, reviews[-1].id).undone_at is not None
        assert session.get(Review, reviews[-2].id).undone_at is None
    # back on the undone patch (its slide may still be opening when the counts change)
    page.wait_for_function("(text) => document.getElementById('patch-info').textContent === text", arg=shown[-1])


def test_serve_command_reports_a_taken_port_in_one_line(served, capsys):
    from wsireview.cli import main

    ws, catalog = served
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--workspace", str(ws.root), "serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1
    assert main(["--workspace", str(ws.root), "serve", "--quality", "0"]) == 2
    assert main(["--workspace", str(ws.root), "serve", "--workers", "0"]) == 2
