"""One base for every failure a user can fix: the CLI prints it as one line and exits with its code.

Domain modules raise subclasses worded in domain terms (a slide, an encoder, an export); anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class WsireviewError(Exception):
    """A failure the user can fix: shown as one line (no traceback); ``code`` is the exit status."""

    code: int = 1
