"""Where everything the tool writes lives: one folder, plus an optional external catalog URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKSPACE = "data"
ENV_WORKSPACE = "WSIREVIEW_WORKSPACE"
ENV_DB = "WSIREVIEW_DB"


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
        url = db_url or os.environ.get(ENV_DB) or f"sqlite:///{chosen / 'catalog.sqlite'}"
        return cls(root=chosen, db_url=url)

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
