"""Names that go into an export: safe file names, and stable anonymous slide names.

Slide names come from file names on someone's disk: they can hold path separators, dots, spaces,
control characters or a patient's name. Output file names are built from a whitelist of characters
so nothing can escape the output folder, and ``--anonymize`` swaps the name for a hash of the slide's
content hash (stable across exports and moves; unlike a hash of the name, not guessable from a list
of accession numbers).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
MAX_STEM = 80


def safe_stem(name: str, fallback: str = "slide") -> str:
    """A file-name stem of ``[A-Za-z0-9._-]`` only, without leading dots, extension or directories.

    ``"../evil name?.svs"`` becomes ``"evil_name"``.
    """
    base = PurePosixPath(name.replace("\\", "/")).name  # last component, either separator
    if "." in base.strip("."):
        base = base.rsplit(".", 1)[0]
    stem = _UNSAFE.sub("_", base).strip("._-")
    stem = re.sub(r"_+", "_", stem)[:MAX_STEM].strip("._-")
    if not stem:
        return fallback
    if stem.split(".")[0].lower() in _WINDOWS_RESERVED:
        stem = f"{fallback}_{stem}"
    return stem


def anonymous_name(content_hash: str | None, fallback_key: str) -> str:
    """A stable pseudonym for a slide: ``anon-`` and 16 hex digits of a hash of its content hash."""
    key = content_hash or f"path:{fallback_key}"
    return "anon-" + hashlib.sha256(f"wsireview-anon:{key}".encode()).hexdigest()[:16]


def unique_stems(names: dict[int, str]) -> dict[int, str]:
    """Safe stems for ``{slide_id: name}``; names that collide after sanitising get ``-<slide id>``."""
    stems = {sid: safe_stem(name) for sid, name in names.items()}
    seen: dict[str, int] = {}
    for stem in stems.values():
        seen[stem.lower()] = seen.get(stem.lower(), 0) + 1
    return {sid: (f"{stem}-{sid}" if seen[stem.lower()] > 1 else stem) for sid, stem in stems.items()}
