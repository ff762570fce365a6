"""Encoded Deep Zoom tiles kept on disk in the workspace: shared by the server's worker processes and
kept from one run of the server to the next.

A tile is stored under its slide's *version* (a digest of the slide's content hash, its file's size
and modification time, and the tile geometry and quality), so a changed slide file or another
``--quality`` finds nothing and renders afresh; versions no longer current are removed by
:meth:`DiskTileCache.prune` when the server starts. Writes are atomic (a temporary file renamed into
place), so a reader in another process sees a whole tile or none. The cache is best effort: a tile
that cannot be written (disk full, read-only workspace) is still served.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path


class DiskTileCache:
    """JPEG bytes by (slide id, version, level, column, row), one file per tile under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: set[Path] = set()  # made already: a put costs no mkdir

    def _folder(self, slide_id: int, version: str) -> Path:
        return self.root / f"{slide_id}-{version}"

    def path(self, slide_id: int, version: str, level: int, col: int, row: int) -> Path:
        return self._folder(slide_id, version) / str(level) / f"{col}_{row}.jpeg"

    def get(self, slide_id: int, version: str, level: int, col: int, row: int) -> bytes | None:
        try:
            return self.path(slide_id, version, level, col, row).read_bytes()
        except OSError:  # not cached (or unreadable: rendered again)
            return None

    def put(self, slide_id: int, version: str, level: int, col: int, row: int, data: bytes) -> None:
        """Store a tile atomically; a failure leaves the cache without it and is not an error."""
        target = self.path(slide_id, version, level, col, row)
        # Unique to this process and thread, so no other writer touches it before the rename.
        tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            if target.parent not in self._folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._folders.add(target.parent)
            tmp.write_bytes(data)
            os.replace(tmp, target)
        except OSError:
            self._folders.discard(target.parent)  # the folder may have been removed meanwhile
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass

    def prune(self, current: set[tuple[int, str]], max_bytes: int) -> None:
        """Remove the folders of slide versions not in ``current`` (changed, deleted or re-encoded
        slides), leftovers of interrupted writes, then the oldest tiles until at most ``max_bytes``
        remain."""
        if not self.root.is_dir():
            return
        keep = {f"{slide_id}-{version}" for slide_id, version in current}
        tiles: list[tuple[float, int, Path]] = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                folder.unlink(missing_ok=True)
                continue
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            for path in folder.rglob("*"):
                if not path.is_file():
                    continue
                if path.name.endswith(".part"):
                    path.unlink(missing_ok=True)
                    continue
                stat = path.stat()
                tiles.append((stat.st_mtime, stat.st_size, path))
        used = sum(size for _, size, _ in tiles)
        for _, size, path in sorted(tiles):
            if used <= max_bytes:
                break
            path.unlink(missing_ok=True)
            used -= size
