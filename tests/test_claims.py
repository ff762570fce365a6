"""Work shared out between reviewers: claims on queued patches, on SQLite and on PostgreSQL.

Every test takes ``catalog_url`` (conftest), so it runs against both databases.
"""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from wsireview.catalog import ModelVersion, Patch, ReviewQueueItem, Slide, open_catalog
from wsireview.catalog.claims import ClaimPolicy, claim_patches, live_claims, release_claims
from wsireview.catalog.models import Claim, utcnow
from wsireview.catalog.progress import queue_progress
from wsireview.catalog.queries import queue_entries
from wsireview.learn.reviews import record_verdict, undo_review

POLICY = ClaimPolicy(batch=5, lease_seconds=300)


def seed_queue(catalog, n: int = 20, slides: int = 2) -> tuple[int, list[int]]:
    """Slides and patch rows (no files), one ready model version, and a queue of ``n`` patches
    alternating between the slides; returns the version id and the queued patch ids in rank order."""
    with catalog.session() as session:
        slide_ids = []
        for s in range(slides):
            slide = Slide(name=f"team-{s}.svs", path=f"/nowhere/team-{s}.svs", status="ready", width=10_000,
                          height=10_000, patch_size_px=224, patch_size_level0=224)
            session.add(slide)
            session.flush()
            slide_ids.append(slide.id)
        session.execute(insert(Patch), [
            {"slide_id": slide_ids[k % slides], "x": 224 * k, "y": 0, "size": 224, "tissue_fraction": 1.0}
            for k in range(n)
        ])
        patch_ids = list(session.scalars(select(Patch.id).order_by(Patch.id)).all())
        version = ModelVersion(encoder="stain-stats", positive_label="lesion", status="ready")
        session.add(version)
        session.flush()
        session.execute(insert(ReviewQueueItem), [
            {"model_version_id": version.id, "patch_id": pid, "rank": rank, "reason": "exploit", "score": 1.0}
            for rank, pid in enumerate(patch_ids, start=1)
        ])
        return version.id, patch_ids


@pytest.fixture
def team(catalog_url):
    catalog = open_catalog(catalog_url)
    version, patches = seed_queue(catalog)
    yield catalog, version, patches
    catalog.close()


def test_two_reviewers_get_different_patches_in_queue_order(team):
    catalog, version, patches = team
    anna = claim_patches(catalog, "anna", version, policy=POLICY)
    ben = claim_patches(catalog, "ben", version, policy=POLICY)
    assert anna == patches[:5]
    assert ben == patches[5:10]
    # what each one's queue shows: nothing the other holds
    ben_sees = {e.patch_id for e in queue_entries(catalog, model_version_id=version, reviewer="ben")}
    assert ben_sees == set(patches) - set(anna)
    # claiming again renews and returns the same patches: nothing new while nothing was judged
    assert claim_patches(catalog, "anna", version, policy=POLICY) == anna
    held = {c.patch_id: c.reviewer for c in live_claims(catalog)}
    assert held == {**{p: "anna" for p in anna}, **{p: "ben" for p in ben}}


def test_judged_patches_hidden_from_others_and_claims_topped_up(team):
    catalog, version, patches = team
    anna = claim_patches(catalog, "anna", version, policy=POLICY)
    for pid in anna[:3]:
        record_verdict(catalog, pid, "lesion", "anna", 1.0, version)
    # anna's claims on judged patches stay hers; her top-up brings her back to 5 pending
    assert claim_patches(catalog, "anna", version, policy=POLICY) == patches[3:8]
    release_claims(catalog, "anna")
    # released: ben now gets the top of the queue, except what anna judged
    assert claim_patches(catalog, "ben", version, policy=POLICY) == patches[3:8]
    ben_sees = {e.patch_id for e in queue_entries(catalog, model_version_id=version, reviewer="ben")}
    assert not ben_sees & set(anna[:3])
    anna_sees = {e.patch_id: e.verdict for e in queue_entries(catalog, model_version_id=version, reviewer="anna")}
    assert {p: anna_sees[p] for p in anna[:3]} == {p: "lesion" for p in anna[:3]}  # her own stay in her queue


def test_expired_lease_returns_its_patches(team):
    catalog, version, patches = team
    t0 = utcnow()
    anna = claim_patches(catalog, "anna", version, policy=POLICY, now=t0)
    before = t0 + POLICY.lease - timedelta(seconds=1)
    assert claim_patches(catalog, "ben", version, policy=POLICY, now=before) == patches[5:10]
    release_claims(catalog, "ben")
    after = t0 + POLICY.lease + timedelta(seconds=1)  # anna's app crashed: nothing renewed her claims
    assert claim_patches(catalog, "ben", version, policy=POLICY, now=after) == anna
    assert claim_patches(catalog, "anna", version, policy=POLICY, now=after) == patches[5:10]
    with catalog.session() as session:
        owners = dict(session.execute(select(Claim.patch_id, Claim.reviewer)).all())
    assert {owners[p] for p in anna} == {"ben"}


def test_undone_verdict_is_held_again_first(team):
    catalog, version, patches = team
    anna = claim_patches(catalog, "anna", version, policy=POLICY)
    review = record_verdict(catalog, anna[0], "not_lesion", "anna", 1.0, version)
    assert claim_patches(catalog, "anna", version, policy=POLICY) == patches[1:6]
    held = {c.patch_id for c in live_claims(catalog)}
    assert held == set(patches[1:6])  # the judged patch's claim was dropped: its verdict hides it
    undo_review(catalog, review)
    assert claim_patches(catalog, "anna", version, policy=POLICY, first=[anna[0]]) == patches[:6]
    assert anna[0] not in claim_patches(catalog, "ben", version, policy=POLICY)


def test_skipped_patches_are_not_counted_or_taken(team):
    catalog, version, patches = team
    anna = claim_patches(catalog, "anna", version, policy=POLICY)
    release_claims(catalog, "anna", [anna[0]])
    assert claim_patches(catalog, "anna", version, policy=POLICY, exclude={anna[0]}) == patches[1:6]
    assert claim_patches(catalog, "ben", version, policy=POLICY)[0] == anna[0]


def test_one_slides_queue(team):
    catalog, version, patches = team
    with catalog.session() as session:
        slide_id, = session.scalars(select(Patch.slide_id).where(Patch.id == patches[1])).all()
        on_slide = session.scalars(select(Patch.id).where(Patch.slide_id == slide_id).order_by(Patch.id)).all()
    assert claim_patches(catalog, "anna", version, slide_id=slide_id, policy=POLICY) == list(on_slide[:5])


def test_progress_per_reviewer_and_team(team):
    catalog, version, patches = team
    for pid in patches[:3]:
        record_verdict(catalog, pid, "lesion", "anna", 1.0, version)
    for pid in patches[3:5]:
        record_verdict(catalog, pid, "not_lesion", "ben", 1.0, version)
    undone = record_verdict(catalog, patches[5], "unsure", "ben", 1.0, version)
    undo_review(catalog, undone)
    record_verdict(catalog, patches[0], "lesion", "anna", 1.0, version)  # a changed mind is one patch
    claim_patches(catalog, "carl", version, policy=POLICY)
    progress = queue_progress(catalog, version)
    assert (progress.queued, progress.team) == (20, 5)
    assert progress.by_reviewer == {"anna": 3, "ben": 2}
    assert progress.claimed == {"carl": 5}
    assert progress.text("ben") == "you 2 · team 5/20 reviewed"
    assert progress.text("dora") == "you 0 · team 5/20 reviewed"


# -- two processes --------------------------------------------------------------------------------

def _review_until_done(url: str, reviewer: str, version: int, start) -> list[int]:
    """A reviewer in its own process: claim, judge everything claimed, until the queue runs dry.
    ``start``: a barrier both reviewers pass before their first claim (a process that starts late
    would otherwise find the queue already done)."""
    catalog = open_catalog(url, migrate=False)
    judged: list[int] = []
    start.wait()
    try:
        while claimed := claim_patches(catalog, reviewer, version, policy=ClaimPolicy(batch=3)):
            for pid in claimed:
                record_verdict(catalog, pid, "lesion", reviewer, 0.1, version)
                judged.append(pid)
    finally:
        release_claims(catalog, reviewer)
        catalog.close()
    return judged


def test_two_processes_get_disjoint_patches(catalog_url):
    catalog = open_catalog(catalog_url)
    version, patches = seed_queue(catalog, n=60)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Manager() as manager, spawn.Pool(2) as pool:
        start = manager.Barrier(2)
        anna, ben = pool.starmap(_review_until_done, [(catalog_url, "anna", version, start),
                                                      (catalog_url, "ben", version, start)])
    assert anna and ben
    assert not set(anna) & set(ben)
    assert sorted(anna + ben) == sorted(patches)
    with catalog.session() as session:
        from wsireview.catalog import Review

        per_patch = session.execute(select(Review.patch_id, func.count()).group_by(Review.patch_id)).all()
        assert {n for _, n in per_patch} == {1} and len(per_patch) == 60
        assert session.scalar(select(func.count()).select_from(Claim)) == 0  # both released on quit
    catalog.close()


def test_status_gives_the_team_count_and_each_reviewers(team):
    from wsireview.cli.status_cmd import queue_line
    from wsireview.status import latest_queue_progress

    catalog, version, patches = team
    record_verdict(catalog, patches[0], "lesion", "anna", 1.0, version)
    record_verdict(catalog, patches[1], "lesion", "ben", 1.0, version)
    record_verdict(catalog, patches[2], "lesion", "ben", 1.0, version)
    claim_patches(catalog, "anna", version, policy=POLICY)
    queue = latest_queue_progress(catalog)
    assert queue == {"model_version_id": version, "queued": 20, "reviewed_by_team": 3,
                     "reviewed_by_reviewer": {"anna": 1, "ben": 2}, "claimed_by_reviewer": {"anna": 5}}
    assert queue_line(queue) == (f"queue of version {version}: team 3/20 reviewed (by reviewer: anna 1, ben 2); "
                                 "claimed now: anna 5")
