"""Where everything the tool writes lives: one folder, plus an optional external catalog URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsireview.errors import WsireviewError

DEFAULT_WORKSPACE = "data"
ENV_WORKSPACE = "WSIREVIEW_WORKSPACE"
ENV_DB = "WSIREVIEW_DB"


class NotAFolder(WsireviewError):
    """The workspace path names something other than a folder (a file, say)."""


class ReadOnlyWorkspace(WsireviewError):
    """The workspace folder or its catalog file cannot be written (SQLite would only say
    "unable to open database file")."""


@dataclass(frozen=True)
class Workspace:
    """A workspace folder and the catalog URL that goes with it.

    Paths stored in the catalog are relative to ``root`` so a workspace can be moved or shared.
    """

    root: Path
    db_url: str

    @classmethod
    def resolve(cls, root: str | os.PathLike | None = None, db_url: str | None = None) -> "Workspace":
        """Pick the workspace from the argument, then the environment, then ``./data``."""
        chosen = Path(root or os.environ.get(ENV_WORKSPACE) or DEFAULT_WORKSPACE).expanduser().resolve()
        if chosen.exists() and not chosen.is_dir():
            raise NotAFolder(f"the workspace {chosen} is a file, not a folder: give --workspace (or "
                             f"${ENV_WORKSPACE}) a folder; it is created when missing")
        url = db_url or os.environ.get(ENV_DB) or f"sqlite:///{chosen / 'catalog.sqlite'}"
        return cls(root=chosen, db_url=url)

    def refuse_read_only(self, catalog_file: Path | None) -> None:
        """Raise :class:`ReadOnlyWorkspace` when the workspace folder, or the SQLite catalog file in
        it, exists but cannot be written: every command writes the catalog (or its journal)."""
        for path in (self.root, catalog_file):
            if path is not None and path.exists() and not os.access(path, os.W_OK):
                raise ReadOnlyWorkspace(f"the workspace {self.root} is read-only ({path} cannot be written): make it "
                                        "writable, or copy the workspace somewhere writable and give --workspace")

    def ensure(self) -> "Workspace":
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def dir(self, name: str) -> Path:
        """A sub-folder of the workspace (thumbs, masks, features, models, exports...), created on demand."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def thumbs(self) -> Path:
        return self.dir("thumbs")

    @property
    def masks(self) -> Path:
        return self.dir("masks")

    @property
    def features(self) -> Path:
        return self.dir("features")

    @property
    def models(self) -> Path:
        return self.dir("models")

    @property
    def tile_cache(self) -> Path:
        """Encoded Deep Zoom tiles of the viewer: safe to delete (they are rendered again)."""
        return self.dir("tile-cache")

    def relative(self, path: Path) -> str:
        """Store a path relative to the workspace when it lies inside it."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def absolute(self, stored: str | None) -> Path | None:
        if not stored:
            return None
        path = Path(stored)
        return path if path.is_absolute() else self.root / path
