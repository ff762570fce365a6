"""End to end: the real `wsireview` command in a tmux terminal, keys sent, screen read, catalog checked.

The session is killed at the end instead of quitting: verdicts shown as made must already be saved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from tui_support import make_queue
from wsireview.catalog import Review, open_catalog

pytestmark = pytest.mark.slow
WSIREVIEW = str(Path(sys.executable).parent / "wsireview")


def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", *args], check=check, capture_output=True, text=True).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session, check=False)


def wait_for(session: str, *texts: str, timeout: float = 60) -> str:
    """The pane once every text shows on it (a frame may be captured half drawn)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        shown = screen(session)
        if all(text in shown for text in texts):
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{texts!r} never appeared; the screen was:\n{screen(session)}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_review_in_tmux_saves_every_verdict(demo_workspace, demo_catalog):
    version = make_queue(demo_catalog, per_slide=2, seed=3)
    demo_catalog.close()
    session = f"wsireview-e2e-{os.getpid()}"
    # stderr is not redirected: Textual draws there.
    command = f"{WSIREVIEW} --workspace {demo_workspace.root} review --reviewer e2e-reviewer"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", command)
    try:
        shown = wait_for(session, "0/12 reviewed", "Lesion", "why")  # footer keys, why it was queued
        assert "top attention" in shown
        for key, progress in (("y", "1/12"), ("n", "2/12"), ("Space", "2/12 reviewed, 1 skipped"), ("a", "3/12"),
                              ("z", "2/12"), ("u", "3/12")):
            tmux("send-keys", "-t", session, key)
            wait_for(session, progress)
        wait_for(session, "last  unsure")
        tmux("send-keys", "-t", session, "?")
        wait_for(session, "Keys:", "Not lesion", "backspace")
    finally:
        tmux("kill-session", "-t", session, check=False)  # no clean quit: nothing may depend on one

    catalog = open_catalog(demo_workspace.db_url)
    with catalog.session() as session_:
        rows = session_.scalars(select(Review).order_by(Review.id)).all()
        got = [(r.verdict, r.undone_at is not None, r.reviewer, r.model_version_id) for r in rows]
    catalog.close()
    assert got == [
        ("lesion", False, "e2e-reviewer", version),
        ("not_lesion", False, "e2e-reviewer", version),
        ("artifact", True, "e2e-reviewer", version),
        ("unsure", False, "e2e-reviewer", version),
    ]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
@pytest.mark.parametrize("graphics", ["kitty", "textual-image"])
def test_textual_image_renderers_start_and_record(demo_workspace, demo_catalog, graphics):
    """textual-image probes the terminal on import; done inside the running app it hung on a blank screen."""
    make_queue(demo_catalog, per_slide=1, seed=5)
    demo_catalog.close()
    session = f"wsireview-kitty-{os.getpid()}"
    command = f"env WSIREVIEW_GRAPHICS={graphics} {WSIREVIEW} --workspace {demo_workspace.root} review --reviewer k"
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", command)
    try:
        wait_for(session, "0/6 reviewed", "Lesion", timeout=30)
        tmux("send-keys", "-t", session, "n")
        wait_for(session, "1/6 reviewed")
    finally:
        tmux("kill-session", "-t", session, check=False)
    catalog = open_catalog(demo_workspace.db_url)
    with catalog.session() as s:
        assert [r.verdict for r in s.scalars(select(Review))] == ["not_lesion"]
    catalog.close()
