"""Files the tool writes: permissions of what is renamed into place, and a full disk told apart.

``tempfile.mkstemp`` and ``mkdtemp`` create private files (0600) and folders (0700), so feature
matrices, checkpoints and exports written that way could not be read by colleagues sharing a
workspace, while the catalog and thumbnails beside them could.
"""

from __future__ import annotations

import errno
import os


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it (022 is the usual value anyway)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def ordinary_mode(directory: bool = False) -> int:
    """The mode any other file (0644) or folder (0755, under umask 022) of this process gets."""
    return (0o777 if directory else 0o666) & ~UMASK


def make_ordinary(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temporary file or folder the ordinary mode before it is renamed into place."""
    os.chmod(path, ordinary_mode(directory))


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (an OS error, or SQLite's "database or disk is full") means no space left."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return True
        if "disk is full" in str(cause).lower() or "no space left" in str(cause).lower():
            return True
        cause = cause.__cause__ or getattr(cause, "orig", None)
    return False
