"""Deep Zoom tiles of catalog slides: open slides in an LRU, OpenSlide's tile cache, encoded tiles kept
in memory and on disk.

Slides are found by catalog id only; the path comes from the catalog, never from a request. The
Deep Zoom image covers the whole level-0 plane (``limit_bounds=False``), so an image coordinate
in the viewer is a level-0 pixel and overlays need no offset. Only the main pyramid is ever read:
associated images (label, macro) have no route.

A tile is looked up in this process's memory, then in the workspace's disk cache (shared by the
server's worker processes and kept between runs), and only then rendered.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import openslide
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from sqlalchemy import select

from wsireview.catalog import READY, Catalog, Slide
from wsireview.serve.config import (
    DISK_TILE_CACHE_BYTES,
    ENCODED_TILE_CACHE_BYTES,
    OPENSLIDE_CACHE_BYTES,
    ServeConfig,
)
from wsireview.serve.tile_cache import DiskTileCache
from wsireview.workspace import Workspace


class TileNotFound(Exception):
    """A tile or slide that cannot be served; the message is safe to show (no paths, no traceback)."""


@dataclass(frozen=True)
class ServedSlide:
    """What the catalog says about a slide the viewer serves."""

    id: int
    name: str
    path: str
    content_hash: str


def tile_version(content_hash: str, file: os.stat_result, config: ServeConfig) -> str:
    """What a slide's tiles depend on: its content, its file (a file replaced in place gets a new size
    or modification time), the tile geometry and the quality. Names the disk cache folder and ends
    the ETag."""
    key = f"{content_hash}|{file.st_size}|{file.st_mtime_ns}|{config.tile_size}|{config.overlap}|{config.quality}"
    return hashlib.blake2s(key.encode(), digest_size=8).hexdigest()


class _OpenSlide:
    def __init__(self, meta: ServedSlide, osr: openslide.AbstractSlide, dz: DeepZoomGenerator, version: str) -> None:
        self.meta, self.osr, self.dz, self.version = meta, osr, dz, version
        self.background = "#" + osr.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR, "ffffff")


def render_tile(opened: _OpenSlide, level: int, address: tuple[int, int]) -> Image.Image:
    """``DeepZoomGenerator.get_tile``'s pixels (a test holds them equal), without its alpha compositing
    where the region is opaque: most tiles are, and compositing costs about a tenth of a tile."""
    dz, osr = opened.dz, opened.osr
    region = osr.read_region(*dz.get_tile_coordinates(level, address))
    profile = region.info.get("icc_profile")
    if region.getchannel("A").getextrema() == (255, 255):
        tile = region.convert("RGB")
    else:  # outside the scanned area, or transparent pixels: on the slide's background colour
        tile = Image.composite(region, Image.new("RGB", region.size, opened.background), region)
    size = dz.get_tile_dimensions(level, address)
    if tile.size != size:
        tile.thumbnail(size, Image.Resampling.LANCZOS)
    if profile is not None:  # as get_tile: the slide's colour profile goes with the tile (Pillow embeds it)
        tile.info["icc_profile"] = profile
    return tile


class _BytesLRU:
    """Encoded tiles (JPEG bytes, ETag) by key, bounded by total bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.used = capacity, 0
        self._items: OrderedDict[tuple, tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[bytes, str] | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, item: tuple[bytes, str]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = item
            self.used += len(item[0])
            while self.used > self.capacity and self._items:
                _, old = self._items.popitem(last=False)
                self.used -= len(old[0])


class TileSource:
    """Deep Zoom descriptors and JPEG tiles for the catalog's ready slides, safe to call from threads."""

    def __init__(self, catalog: Catalog, workspace: Workspace, config: ServeConfig) -> None:
        self.catalog, self.workspace, self.config = catalog, workspace, config
        self._open: OrderedDict[int, _OpenSlide] = OrderedDict()
        self._lock = threading.Lock()
        self._opening: dict[int, threading.Lock] = {}
        self._cache = openslide.OpenSlideCache(OPENSLIDE_CACHE_BYTES)
        self._tiles = _BytesLRU(ENCODED_TILE_CACHE_BYTES)
        self._versions: dict[int, str] = {}  # of the slides opened: a memory hit needs no file access
        self.disk = DiskTileCache(workspace.tile_cache)

    # -- slides ---------------------------------------------------------------------------------
    def slide_file(self, slide_id: int) -> ServedSlide:
        """A ready catalog slide's file, or TileNotFound."""
        with self.catalog.session() as session:
            row = session.execute(
                select(Slide.id, Slide.name, Slide.path, Slide.content_hash, Slide.status).where(Slide.id == slide_id)
            ).first()
        if row is None:
            raise TileNotFound(f"no slide {slide_id} in the catalog")
        if row.status != READY:
            raise TileNotFound(f"slide {row.name} is {row.status}, not ready")
        return ServedSlide(row.id, row.name, row.path, row.content_hash or "")

    def _slide(self, slide_id: int) -> _OpenSlide:
        with self._lock:
            opened = self._open.get(slide_id)
            if opened is not None:
                self._open.move_to_end(slide_id)
                return opened
            gate = self._opening.setdefault(slide_id, threading.Lock())
        with gate:  # one thread opens a slide; the others wait for it instead of opening it again
            with self._lock:
                if slide_id in self._open:
                    return self._open[slide_id]
            opened = self._open_file(self.slide_file(slide_id))
            with self._lock:
                self._open[slide_id] = opened
                self._versions[slide_id] = opened.version
                while len(self._open) > self.config.open_slides:
                    # Dropped, not closed: a thread may still be reading it; OpenSlide closes it when
                    # the last reference goes.
                    self._open.popitem(last=False)
            return opened

    def _open_file(self, meta: ServedSlide) -> _OpenSlide:
        path = self.workspace.absolute(meta.path)
        if path is None or not path.is_file():
            raise TileNotFound(f"the file of slide {meta.name} is missing (moved or deleted?)")
        try:
            file = path.stat()
            osr = openslide.open_slide(str(path))
        except Exception as error:  # OpenSlide and PIL raise many types; the reason is what matters
            raise TileNotFound(f"slide {meta.name} cannot be opened ({type(error).__name__})") from error
        osr.set_cache(self._cache)
        dz = DeepZoomGenerator(osr, tile_size=self.config.tile_size, overlap=self.config.overlap, limit_bounds=False)
        return _OpenSlide(meta, osr, dz, tile_version(meta.content_hash, file, self.config))

    def current_versions(self) -> set[tuple[int, str]]:
        """(slide id, tile version) of every ready slide whose file is there, from the catalog and a
        stat of each file, without opening any slide."""
        with self.catalog.session() as session:
            rows = session.execute(
                select(Slide.id, Slide.path, Slide.content_hash).where(Slide.status == READY)
            ).all()
        versions = set()
        for slide_id, stored, content_hash in rows:
            path = self.workspace.absolute(stored)
            if path is None:  # no path: nothing of it is worth keeping
                continue
            try:
                versions.add((slide_id, tile_version(content_hash or "", path.stat(), self.config)))
            except OSError:  # missing file: nothing of it is worth keeping
                continue
        return versions

    def prune_disk_cache(self) -> None:
        """Drop cached tiles of slides that changed, went or are encoded differently now, then the oldest
        beyond the size limit. Run once when the server starts."""
        self.disk.prune(self.current_versions(), DISK_TILE_CACHE_BYTES)

    # -- Deep Zoom ------------------------------------------------------------------------------
    def dzi(self, slide_id: int) -> str:
        """The Deep Zoom descriptor (XML) of a slide."""
        return self._slide(slide_id).dz.get_dzi("jpeg")

    def level_count(self, slide_id: int) -> int:
        return self._slide(slide_id).dz.level_count

    @staticmethod
    def _etag(slide_id: int, version: str, level: int, col: int, row: int) -> str:
        """Changes when the slide's file, the tile geometry or the quality changes."""
        return f'"{slide_id}-{level}-{col}-{row}-{version}"'

    def cached(self, slide_id: int, level: int, col: int, row: int) -> tuple[bytes, str] | None:
        """A tile this process served before, with its ETag, without touching the slide, the disk or the
        catalog (cheap enough for the event loop)."""
        version = self._versions.get(slide_id)
        return None if version is None else self._tiles.get((slide_id, version, level, col, row))

    def tile_with_etag(self, slide_id: int, level: int, col: int, row: int) -> tuple[bytes, str]:
        """One JPEG tile and its ETag; TileNotFound when the slide, level or address does not exist or
        cannot be read."""
        hit = self.cached(slide_id, level, col, row)
        if hit is not None:
            return hit
        opened = self._slide(slide_id)
        dz = opened.dz
        if not 0 <= level < dz.level_count:
            raise TileNotFound(f"no level {level}: the slide has levels 0 to {dz.level_count - 1}")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFound(f"no tile {col}_{row} at level {level}: it has {cols} x {rows}")
        address = (slide_id, opened.version, level, col, row)
        data = self.disk.get(*address)
        if data is None:
            try:
                image = render_tile(opened, level, (col, row))
            except Exception as error:  # corrupt tile data: OpenSlideError, or a PIL decode error
                raise TileNotFound(f"tile {level}/{col}_{row} cannot be read ({type(error).__name__})") from error
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=self.config.quality)
            data = buffer.getvalue()
            self.disk.put(*address, data)
        hit = (data, self._etag(*address))
        self._tiles.put(address, hit)
        return hit

    def tile(self, slide_id: int, level: int, col: int, row: int) -> bytes:
        return self.tile_with_etag(slide_id, level, col, row)[0]
