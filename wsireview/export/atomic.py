"""Write an export into a hidden folder next to OUT and rename it into place only when complete.

An interrupted or failed export leaves OUT as it was (absent, or the previous export with
``--force``); nothing half-written ever sits at OUT looking complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from wsireview.errors import WsireviewError
from wsireview.files import make_ordinary


class ExportError(WsireviewError):
    """An export that cannot be done, with a reason a person can act on."""


def check_target(out: Path, force: bool, protected: Iterable[Path] = ()) -> None:
    """Refuse a non-empty OUT without ``force``, and with ``force`` a folder that holds precious data."""
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"{out} is not empty; choose an empty or new folder, or pass --force to replace it")
        for keep in [Path.cwd(), Path.home(), *protected]:
            keep = Path(os.path.abspath(keep))
            if keep == out or out in keep.parents:
                raise ExportError(f"refusing to replace {out}: it contains {keep}")


@contextmanager
def atomic_dir(out: Path, force: bool = False, protected: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``out``; on success it becomes ``out``."""
    out = Path(os.path.abspath(out))
    check_target(out, force, protected)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    make_ordinary(tmp, directory=True)
    try:
        yield tmp
        check_target(out, force, protected)  # something may have appeared at OUT meanwhile
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "previous")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
