"""A team on one cohort: kappa against hand-computed and textbook tables, the one verdict rule, blinded
double reads (the second reviewer's screen and JSON do not change with the first verdict),
adjudication (the app records it; export and training follow it) and `wsireview agreement`."""

from __future__ import annotations

import csv
import html
import json
import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from test_tui import text_of
from tui_support import make_queue, settle
from wsireview.catalog import ADJUDICATION, Review, ReviewQueueItem
from wsireview.catalog.claims import claim_patches, release_claims
from wsireview.catalog.progress import queue_progress
from wsireview.catalog.queries import adjudication_entries, queue_entries
from wsireview.catalog.verdicts import PatchReads, Vote, decide, needs_adjudication
from wsireview.cli import main
from wsireview.learn.agreement import agreement_report, cohen_kappa, fleiss_kappa
from wsireview.learn.labels import instance_targets
from wsireview.learn.query import double_read_picks
from wsireview.learn.status import queued_patches
from wsireview.learn.reviews import change_verdict, record_adjudication, record_verdict
from wsireview.serve.app import create_app
from wsireview.serve.config import ServeConfig
from wsireview.tui.app import ReviewApp

T = datetime(2025, 1, 1, tzinfo=timezone.utc)


# -- kappa ------------------------------------------------------------------------------------------

def test_cohen_kappa_textbook_all_agree_and_chance():
    # Wikipedia's example (50 grant proposals): p_o 0.7, p_e 0.5, kappa 0.4.
    assert cohen_kappa([[20, 5], [10, 15]]).kappa == pytest.approx(0.4)
    # SAS PROC FREQ's simple kappa example: kappa 0.4842, ASE 0.1380, 95% CI 0.2137 to 0.7547.
    sas = cohen_kappa([[0, 4, 1], [0, 8, 0], [0, 1, 5]])
    assert (sas.kappa, sas.se, sas.low, sas.high) == pytest.approx((0.4842, 0.1380, 0.2137, 0.7547), abs=5e-5)
    agree = cohen_kappa([[10, 0, 0], [0, 5, 0], [0, 0, 3]])
    assert (agree.kappa, agree.se, agree.low, agree.high, agree.observed) == pytest.approx((1, 0, 1, 1, 1))
    chance = cohen_kappa([[25, 25], [25, 25]])  # agreement 0.5, exactly what chance gives
    assert chance.kappa == pytest.approx(0) and chance.low < 0 < chance.high and chance.observed == 0.5
    worse = cohen_kappa([[0, 10], [10, 0]])  # never agree: -1
    assert worse.kappa == pytest.approx(-1) and worse.low == -1
    one = cohen_kappa([[7, 0], [0, 0]])  # one verdict for everything: kappa is undefined
    assert one.kappa is None and one.observed == 1
    assert cohen_kappa([[0, 0], [0, 0]]).kappa is None


def test_fleiss_kappa_textbook_equal_and_unequal_raters():
    # Fleiss (1971) as Wikipedia gives it: 10 subjects, 14 raters, 5 categories, kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=5e-5)
    # Unequal reads, by hand: 2 lesion / 1+1 split / 3 not lesion -> 1 - 1 / (3 * 4/3 * 24/49) = 47/96.
    assert fleiss_kappa([[2, 0], [1, 1], [0, 3]]) == pytest.approx(47 / 96)
    assert fleiss_kappa([[2, 0], [0, 2], [0, 3], [5, 0]]) == pytest.approx(1)
    assert fleiss_kappa([[1, 0], [0, 1]]) is None  # single reads: nothing to agree on
    # Two raters each: Fleiss' kappa is Scott's pi; with equal marginals it equals Cohen's kappa.
    assert fleiss_kappa([[2, 0]] * 20 + [[1, 1]] * 10 + [[0, 2]] * 20) == pytest.approx(
        cohen_kappa([[20, 5], [5, 20]]).kappa)


# -- the one rule -------------------------------------------------------------------------------------

def vote(i: int, who: str, verdict: str) -> Vote:
    return Vote(i, who, verdict, T.replace(minute=i), None)


def test_verdict_rule_adjudication_and_who_may_judge():
    split = [vote(1, "anna", "lesion"), vote(2, "ben", "not_lesion")]
    assert decide(split) == (None, "tie")
    assert decide(split, vote(3, "carol", "not_lesion")) == ("not_lesion", None)
    assert decide(split, vote(3, "carol", "not_lesion"), consensus="majority") == (None, "tie")
    assert decide(split, vote(3, "carol", "unsure")) == (None, "unsure")
    assert decide([vote(1, "anna", "lesion"), vote(2, "ben", "unsure")]) == ("lesion", None)
    assert needs_adjudication(PatchReads(tuple(split)))
    assert not needs_adjudication(PatchReads(tuple(split), vote(3, "carol", "lesion")))
    assert needs_adjudication(PatchReads((vote(1, "anna", "unsure"), vote(2, "ben", "unsure"))))
    assert needs_adjudication(PatchReads((vote(1, "anna", "unsure"),)))  # unsure from everyone who judged it
    assert not needs_adjudication(PatchReads((vote(1, "anna", "lesion"), vote(2, "ben", "unsure"))))
    assert not needs_adjudication(PatchReads((vote(1, "anna", "lesion"), vote(2, "ben", "lesion"))))
    picks = double_read_picks(50, 0.1, seed=3)
    assert len(picks) == 5 and picks == double_read_picks(50, 0.1, seed=3) != double_read_picks(50, 0.1, seed=4)
    assert max(picks) < 50 and double_read_picks(50, 0.0, 3) == set() and len(double_read_picks(4, 1.0, 0)) == 4


# -- a queue with double reads ------------------------------------------------------------------------

DOUBLE_RANKS = (1, 4)


@pytest.fixture
def team(demo_workspace, demo_catalog):
    """The demo cohort with a queue of 12 (2 per slide), ranks 1 and 4 double reads; anna has judged
    every item (lesion on the double reads, not lesion elsewhere)."""
    version = make_queue(demo_catalog, per_slide=2, seed=1)
    with demo_catalog.session() as s:
        s.execute(update(ReviewQueueItem).where(ReviewQueueItem.rank.in_(DOUBLE_RANKS)).values(reads=2))
    entries = queue_entries(demo_catalog)
    for e in entries:
        record_verdict(demo_catalog, e.patch_id, "lesion" if e.rank in DOUBLE_RANKS else "not_lesion", "anna",
                       2.0, version)
    return demo_workspace, demo_catalog, version, entries


def test_double_read_items_wait_for_a_second_different_reviewer(team):
    """The one rule of the queue (claims.claimable_by over verdicts.may_judge): a double read stays
    open for a second, different reviewer, blind, and claims hand it out to one of them at a time."""
    _, cat, version, entries = team
    doubles = [e.patch_id for e in entries if e.rank in DOUBLE_RANKS]
    assert all(e.done for e in queue_entries(cat, reviewer="anna"))
    assert claim_patches(cat, "anna", version) == []  # anna read everything: nothing for her to take
    assert sorted(e.patch_id for e in queue_entries(cat) if not e.done) == sorted(doubles)
    for_ben = queue_entries(cat, reviewer="ben")  # items with all their reads are not in ben's queue
    assert [e.patch_id for e in for_ben] == doubles
    assert all(e.verdict is None and e.reads == 2 and not e.done for e in for_ben)  # blind: no verdict
    assert queued_patches(cat, version) == 2  # `status`: the double reads still wait for a read
    progress = queue_progress(cat, version)
    assert (progress.team, progress.queued, progress.yours("anna")) == (10, 12, 12)  # half done: still queued
    assert claim_patches(cat, "ben", version) == doubles  # the second reader gets them
    assert queue_entries(cat, reviewer="carol") == []  # ben holds both
    assert queue_progress(cat, version).claimed == {"ben": 2}
    record_verdict(cat, doubles[0], "not_lesion", "ben", 1.0, version)
    assert queued_patches(cat, version) == 1
    assert claim_patches(cat, "ben", version) == [doubles[1]]  # his read one dropped, nobody may read it again
    release_claims(cat, "ben")
    assert [e.patch_id for e in queue_entries(cat, reviewer="carol") if not e.done] == [doubles[1]]
    assert [e.patch_id for e in queue_entries(cat, reviewer="ben") if not e.done] == [doubles[1]]
    assert queue_progress(cat, version).team == 11


def test_a_half_done_double_read_is_not_adjudicated_before_its_second_read(team):
    """A double read whose one reader was unsure is not disputed yet: the adjudicator would see that
    read before the second reader gives theirs. Once both are in (and both unsure) it is."""
    from wsireview.learn.reviews import verdict_counts

    _, cat, version, entries = team
    doubles = [e.patch_id for e in entries if e.rank in DOUBLE_RANKS]
    change_verdict(cat, doubles[0], "anna", "unsure")
    assert doubles[0] not in {e.patch_id for e in adjudication_entries(cat)}
    assert agreement_report(cat).adjudication_pending == verdict_counts(cat)["adjudication"]["pending"] == 0
    record_verdict(cat, doubles[0], "unsure", "ben", 1.0, version)  # the second read: unsure too
    assert [e.patch_id for e in adjudication_entries(cat)] == [doubles[0]]
    assert agreement_report(cat).adjudication_pending == verdict_counts(cat)["adjudication"]["pending"] == 1


def screen_text(app) -> str:
    """Every character the screen shows (the SVG screenshot's text)."""
    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg[svg.index("<g"):])).replace("\xa0", " ")


async def ben_sees(ws, cat) -> tuple[int, str, str]:
    """The patch ben's triage opens on, the triage screen's text and the slide view's (`s`)."""
    app = ReviewApp(ws, cat, reviewer="ben", start="review")
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        shown = app.screen.current.patch_id
        triage = screen_text(app)
        await pilot.press("s")
        await settle(pilot)
        slide = screen_text(app)
    return shown, triage, slide


@pytest.mark.asyncio
async def test_second_reader_sees_no_hint_of_the_first_verdict(team):
    ws, cat, _, entries = team
    first_double = next(e.patch_id for e in entries if e.rank == DOUBLE_RANKS[0])
    shown, triage, slide = await ben_sees(ws, cat)
    assert shown == first_double  # the single reads are done; ben gets the double read anna judged
    assert "anna" not in triage and "anna" not in slide
    client = TestClient(create_app(cat, ws, ServeConfig.for_bind("127.0.0.1", reviewer="ben")),
                        base_url="http://127.0.0.1")
    sid = next(e.slide_id for e in entries if e.patch_id == first_double)
    queue = client.get("/api/queue").json()
    overlays = client.get(f"/api/slides/{sid}/overlays").json()
    item = next(e for e in queue if e["patch_id"] == first_double)
    assert item["verdict"] is None and item["done"] is False
    assert first_double not in {v["patch_id"] for v in overlays["verdicts"]}
    assert "anna" in json.dumps(overlays)  # anna's single reads on the slide are shown: only the double is hidden

    change_verdict(cat, first_double, "anna", "not_lesion")  # anna's verdict changes ...
    assert (shown, triage, slide) == await ben_sees(ws, cat)  # ... and nothing ben sees changes
    assert client.get("/api/queue").json() == queue
    assert client.get(f"/api/slides/{sid}/overlays").json() == overlays
    # Once ben has judged it, the patch is no longer blind to him.
    record_verdict(cat, first_double, "lesion", "ben")
    assert first_double in {v["patch_id"] for v in client.get(f"/api/slides/{sid}/overlays").json()["verdicts"]}


# -- adjudication -------------------------------------------------------------------------------------

def manifest(out) -> dict[int, dict]:
    with open(out / "manifest.csv", newline="") as handle:
        return {int(r["patch_id"]): r for r in csv.DictReader(handle)}


@pytest.mark.asyncio
async def test_adjudication_in_the_app_changes_training_and_export(team, tmp_path):
    ws, cat, version, entries = team
    split, agreed = [e.patch_id for e in entries if e.rank in DOUBLE_RANKS]
    record_verdict(cat, split, "not_lesion", "ben", 1.0, version)  # anna said lesion: a disagreement
    record_verdict(cat, agreed, "lesion", "ben", 1.0, version)
    assert [e.patch_id for e in adjudication_entries(cat)] == [split]
    assert split not in instance_targets(cat) and instance_targets(cat)[agreed] == 1

    before = tmp_path / "before"
    assert main(["--workspace", str(ws.root), "export", str(before), "--format", "imagefolder"]) == 0
    assert split not in manifest(before)  # a tie: dropped
    assert json.loads((before / "export.json").read_text())["dropped"]["tie"] == 1

    app = ReviewApp(ws, cat, reviewer="carol", start="review", adjudicate=True)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(pilot)
        assert app.screen.current.patch_id == split
        assert "Adjudication" in screen_text(app)
        assert "reads anna lesion, ben not lesion" in text_of(app.screen.query_one("#triage-info"))  # named
        await pilot.press("n")
        await settle(pilot)
    with cat.session() as s:
        decision = s.scalars(select(Review).where(Review.role == ADJUDICATION)).one()
        assert (decision.patch_id, decision.verdict, decision.reviewer) == (split, "not_lesion", "carol")
    assert adjudication_entries(cat) == []
    assert instance_targets(cat)[split] == 0  # training follows the adjudicator

    after = tmp_path / "after"
    assert main(["--workspace", str(ws.root), "export", str(after), "--format", "imagefolder"]) == 0
    rows = manifest(after)
    assert rows[split]["label"] == "not_lesion" and rows[split]["adjudicator"] == "carol"
    assert rows[split]["file"].startswith("not_lesion/") and (after / rows[split]["file"]).is_file()
    assert json.loads((after / "export.json").read_text())["options"]["consensus"] == "adjudicated"
    assert rows[agreed]["label"] == "lesion" and rows[agreed]["adjudicator"] == ""
    majority = tmp_path / "majority"
    assert main(["--workspace", str(ws.root), "export", str(majority), "--format", "csv",
                 "--consensus", "majority"]) == 0
    assert split not in manifest(majority)  # the existing rules are still there


def test_agreement_command_and_team_numbers(team, capsys):
    ws, cat, version, entries = team
    split, agreed = [e.patch_id for e in entries if e.rank in DOUBLE_RANKS]
    record_verdict(cat, split, "not_lesion", "ben", 1.0, version)
    record_verdict(cat, agreed, "lesion", "ben", 1.0, version)
    assert main(["--workspace", str(ws.root), "agreement", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (pair,) = doc["pairs"]
    assert pair["reviewers"] == ["anna", "ben"] and pair["patches"] == 2 and pair["percent_agreement"] == 50.0
    # anna: lesion, lesion; ben: not lesion, lesion -> p_o 0.5, p_e 0.5, kappa 0.
    assert pair["confusion"]["table"][0] == [1, 1, 0, 0] and pair["kappa"] == pytest.approx(0)
    assert doc["fleiss"]["patches"] == 2 and doc["fleiss"]["kappa"] == pytest.approx(-1 / 3)
    assert doc["adjudication"] == {"pending": 1, "decided": 0} and doc["reviewers"] == {"anna": 12, "ben": 2}
    assert main(["--workspace", str(ws.root), "agreement"]) == 0
    text = capsys.readouterr().out
    assert "anna / ben" in text and "Fleiss" in text and "1 waiting" in text
    assert main(["--workspace", str(ws.root), "status", "--json"]) == 0
    verdicts = json.loads(capsys.readouterr().out)["verdicts"]
    assert verdicts["by_patch"] == {"not_lesion": 10, "lesion": 1, "no_verdict": 1}
    assert verdicts["adjudication"] == {"pending": 1, "decided": 0}
    record_adjudication(cat, split, "lesion", "carol")
    assert agreement_report(cat).adjudicated == 1
    assert main(["--workspace", str(ws.root), "status"]) == 0
    assert "11 not lesion" not in (text := capsys.readouterr().out) and "2 lesion, 10 not lesion" in text
    assert "adjudication: 0 waiting, 1 decided" in text


@pytest.mark.asyncio
async def test_team_screen_from_the_slides_screen(team):
    ws, cat, version, entries = team
    record_verdict(cat, next(e.patch_id for e in entries if e.rank == DOUBLE_RANKS[0]), "not_lesion", "ben")
    app = ReviewApp(ws, cat, reviewer="carol")
    async with app.run_test(size=(100, 35)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert type(app.screen).__name__ == "TeamScreen"
        text = screen_text(app)
        assert "anna / ben" in text and "1 waiting" in text
        await pilot.press("j")  # the adjudication queue from there
        await settle(pilot)
        assert app.screen.adjudicate and app.screen.current is not None
