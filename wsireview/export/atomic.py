"""Write an export into a hidden folder next to OUT and rename it into place only when complete.

An interrupted or failed export leaves OUT as it was (absent, or the previous export with
``--force``); nothing half-written ever sits at OUT looking complete. A running export holds a
lock on its hidden folder (``flock``, which the kernel drops when the process dies, even by
``kill -9``), so the next export to the same OUT, or ``wsireview db check``, can tell a killed
export's folder from a running one's and removes only the former.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from wsireview.errors import WsireviewError
from wsireview.files import make_ordinary


# The hidden folders an export makes beside OUT: the export being written, the export it replaces.
HIDDEN_DIR = re.compile(r"^\.(?P<out>.+)\.(?:partial|old)-[A-Za-z0-9_]+$")


class ExportError(WsireviewError):
    """An export refused before anything is written (its options or OUT), with a reason a person can act on."""

    code = 2


@contextmanager
def _held(folder: Path) -> Iterator[bool]:
    """Try to lock ``folder``; yield whether this process holds it (then nobody else does)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # gone meanwhile, or not ours to open: not a leftover this process can remove
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _mkdtemp_locked(prefix: str, parent: Path) -> tuple[Path, int]:
    """A new hidden folder and the descriptor that holds its lock until closed."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = os.open(folder, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return folder, fd


def abandoned_dirs(parent: Path, out_name: str | None = None) -> list[Path]:
    """Hidden export folders in ``parent`` (of OUT ``out_name``, or of any OUT) that no running
    export holds: what an export killed before its rename left."""
    found = []
    for entry in sorted(parent.iterdir()) if parent.is_dir() else []:
        match = HIDDEN_DIR.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink() or (out_name and match["out"] != out_name):
            continue
        with _held(entry) as free:
            if free:
                found.append(entry)
    return found


def remove_abandoned(folder: Path) -> bool:
    """Remove one hidden export folder unless an export holds it again meanwhile; True if removed."""
    with _held(folder) as free:
        if free:
            shutil.rmtree(folder, ignore_errors=True)
        return free and not folder.exists()


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
    """Yield a fresh temporary folder beside ``out``; on success it becomes ``out``.

    Hidden folders that killed exports to the same OUT left are removed first.
    """
    out = Path(os.path.abspath(out))
    check_target(out, force, protected)
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in abandoned_dirs(out.parent, out.name):
        remove_abandoned(leftover)
    tmp, lock = _mkdtemp_locked(f".{out.name}.partial-", out.parent)
    make_ordinary(tmp, directory=True)
    try:
        yield tmp
        check_target(out, force, protected)  # something may have appeared at OUT meanwhile
        if out.exists():
            old, old_lock = _mkdtemp_locked(f".{out.name}.old-", out.parent)
            try:
                os.rename(out, old / "previous")
                os.rename(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            finally:
                os.close(old_lock)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
