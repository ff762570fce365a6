"""The review app with a team on one queue: claims, the two counts, and a newer model version."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from sqlalchemy import select

from tui_support import make_queue, settle, wait_for
from wsireview.catalog import Review
from wsireview.catalog.claims import CLAIMS, claim_patches, live_claims
from wsireview.catalog.queries import queue_entries
from wsireview.learn.reviews import record_verdict
from wsireview.tui.app import ReviewApp

pytestmark = pytest.mark.asyncio


def title(app) -> str:
    console = Console(width=300, file=io.StringIO(), record=True)
    console.print(app.screen.query_one("#triage-title").content)
    return console.export_text()


@pytest.fixture
def queued(demo_workspace, demo_catalog):
    version = make_queue(demo_catalog, per_slide=3, seed=1)
    return demo_workspace, demo_catalog, version


async def test_app_shows_only_its_claims_and_counts_you_and_team(queued):
    ws, cat, version = queued
    queue = [e.patch_id for e in queue_entries(cat)]
    ben = claim_patches(cat, "ben", version)  # ben, in another window, took the top of the queue
    record_verdict(cat, ben[0], "lesion", "ben", 1.0, version)
    app = ReviewApp(ws, cat, reviewer="anna", start="review")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.current.patch_id == queue[CLAIMS.batch]  # the first patch nobody holds
        assert not {e.patch_id for e in screen.entries} & set(ben)
        assert "you 0 · team 1/18 " in title(app)
        for _ in range(4):
            await pilot.press("y")
            await settle(pilot)
        assert "you 4 · team 5/18 " in title(app)
        await pilot.press("z")  # undo: the patch is hers again, and both counts drop by one
        await settle(pilot)
        assert "you 3 · team 4/18 " in title(app)
        assert screen.current.patch_id == queue[CLAIMS.batch + 3]
        await pilot.press("y")
        await settle(pilot)
        held = {c.patch_id for c in live_claims(cat) if c.reviewer == "anna"}
        assert held and not held & set(ben)
    # quitting released anna's claims; ben's stay
    assert {c.reviewer for c in live_claims(cat)} == {"ben"}
    with cat.session() as session:
        judged = session.execute(select(Review.patch_id, Review.undone_at).where(Review.reviewer == "anna")
                                 .order_by(Review.id)).all()
    mine = queue[CLAIMS.batch:CLAIMS.batch + 4]
    assert [(pid, undone is not None) for pid, undone in judged] == \
        [(p, False) for p in mine[:3]] + [(mine[3], True), (mine[3], False)]


async def test_newer_model_version_is_announced_and_N_switches(queued):
    ws, cat, version = queued
    app = ReviewApp(ws, cat, reviewer="anna", start="review")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        first = app.screen.current
        newer = make_queue(cat, per_slide=2, seed=5, parent_id=version)  # someone retrained meanwhile
        await pilot.press("y")  # the next patch: the app looks for a newer version
        await settle(pilot)
        await wait_for(pilot, lambda: any(f"v{newer}" in str(n.message) for n in app._notifications),
                       what="the new-version notice")
        notice = next(str(n.message) for n in app._notifications if f"v{newer}" in str(n.message))
        assert "press N" in notice and f"v{version}" in notice
        assert f"model v{version} (v{newer} out: N)" in title(app)
        assert app.screen.current.model_version_id == version  # nothing changes until asked
        await pilot.press("N")
        await settle(pilot)
        assert app.screen.model_version_id == newer
        assert app.screen.current.model_version_id == newer
        assert f"model v{newer}" in title(app) and "out: N" not in title(app)
        await pilot.press("n")
        await settle(pilot)
    with cat.session() as session:
        rows = session.execute(select(Review.patch_id, Review.model_version_id).order_by(Review.id)).all()
    # each verdict records the version whose queue showed the patch
    assert rows[0] == (first.patch_id, version)
    assert rows[1][1] == newer


async def test_a_queue_read_again_keeps_the_patch_on_screen_and_lets_a_skipped_patch_go(queued):
    """Others free patches ahead of this reviewer's: the queue is read again, and the patch on screen
    stays the one a verdict goes to (before, the list changed under it and `y` judged another patch).
    A top-up read before a skip no longer holds the skipped patch for the rest of the session."""
    from wsireview.catalog.claims import release_claims

    ws, cat, version = queued
    queue = [e.patch_id for e in queue_entries(cat)]
    ben = claim_patches(cat, "ben", version)  # ben holds the top of the queue
    app = ReviewApp(ws, cat, reviewer="anna", start="review")
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        screen = app.screen
        shown = screen.current.patch_id
        assert shown == queue[CLAIMS.batch] and not {e.patch_id for e in screen.entries} & set(ben)
        release_claims(cat, "ben")  # ben quits; anna's next top-up takes his patches, ahead of hers
        screen._claims_ready(claim_patches(cat, "anna", version, first=tuple(ben[:2])), None, None)
        await settle(pilot)
        assert set(ben[:2]) <= {e.patch_id for e in screen.entries}  # the queue was read again
        assert screen.current.patch_id == shown
        await pilot.press("y")
        await settle(pilot)
        skipped = screen.current.patch_id
        stale = claim_patches(cat, "anna", version, first=(skipped,))  # a top-up read just before the skip
        await pilot.press("space")
        await settle(pilot)
        screen._claims_ready(stale, None, None)  # ... arrives after it
        await settle(pilot)
        assert skipped in stale and skipped not in screen.claimed
        assert skipped not in {c.patch_id for c in live_claims(cat) if c.reviewer == "anna"}
    with cat.session() as session:
        judged = session.scalars(select(Review.patch_id).where(Review.reviewer == "anna")).all()
    assert judged == [shown]
