"""The viewer's settings, each defined once, and the rule for when a token is required."""

from __future__ import annotations

import functools
import ipaddress
import secrets
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_QUALITY = 90
TILE_SIZE = 254  # Deep Zoom tiles of 254 px + 1 px overlap on each side: 256 px images, as OpenSlide's server
TILE_OVERLAP = 1
OPEN_SLIDES = 16  # an LRU of open slides: opening costs far more than a tile
OPENSLIDE_CACHE_BYTES = 256 << 20  # OpenSlide's decoded-tile cache, shared by a worker's open slides
ENCODED_TILE_CACHE_BYTES = 128 << 20  # JPEG bytes of recently served tiles, in each worker process
DISK_TILE_CACHE_BYTES = 2 << 30  # JPEG tiles kept in the workspace between runs (oldest dropped at start)
# One process: its threads render on every core (OpenSlide and Pillow release the GIL), and its OpenSlide
# cache decodes each source tile once. More workers decode shared source tiles once each and cost about
# 15% more CPU per tile (measured on 2 busy cores); they pay off only where Python itself is the limit.
DEFAULT_WORKERS = 1
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@functools.lru_cache(maxsize=256)  # asked for every request's Host header
def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_hex(24)


@dataclass(frozen=True)
class ServeConfig:
    """How the viewer serves: where it binds, who reviews, how tiles are encoded, and its token.

    ``token`` None means no token is asked for, which only a loopback bind allows; use
    :meth:`for_bind` to get that rule applied.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    reviewer: str = "unknown"
    token: str | None = None
    quality: int = DEFAULT_QUALITY
    tile_size: int = TILE_SIZE
    overlap: int = TILE_OVERLAP
    open_slides: int = OPEN_SLIDES
    workers: int = DEFAULT_WORKERS

    @classmethod
    def for_bind(cls, host: str = DEFAULT_HOST, token: str | None = None, **settings) -> "ServeConfig":
        """The settings for a bind: any address that is not loopback gets a token (the given one, else a
        fresh random one); loopback keeps the token only when one is given."""
        if token is None and not is_loopback(host):
            token = new_token()
        return cls(host=host, token=token, **settings)

    def url(self, path: str = "/") -> str:
        """The address to open, with the token (as Jupyter prints it) when one is required."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port}{path}{query}"
