"""Changing one's mind: verdicts changed or withdrawn after the fact, appended to the reviews,
and what training, export and the counts make of them; slide labels set with who and when."""

from __future__ import annotations

import csv
from datetime import datetime, timezone

from sqlalchemy import select

from wsireview.catalog import Patch, Review, Slide
from wsireview.export import ExportOptions, Selection, run_export
from wsireview.export.selection import select_patches
from wsireview.learn.labels import (
    SUGGESTED_LABELS,
    instance_targets,
    known_labels,
    needs_labels,
    set_slide_label,
    slide_targets,
)
from wsireview.learn.reviews import (
    WITHDRAWN,
    change_verdict,
    record_verdict,
    reviewer_history,
    verdict_counts,
    withdraw_verdict,
)


def add_slides(catalog, n_slides: int = 2, n_patches: int = 3) -> dict[str, list[int]]:
    """Slide rows with a few patches each (no files: nothing here reads pixels); name -> patch ids."""
    out = {}
    with catalog.session() as session:
        for i in range(n_slides):
            slide = Slide(name=f"s{i}.tiff", path=f"/nowhere/s{i}.tiff", width=2240, height=2240)
            session.add(slide)
            session.flush()
            patches = [Patch(slide_id=slide.id, x=224 * k, y=0, size=224, tissue_fraction=1.0) for k in range(n_patches)]
            session.add_all(patches)
            session.flush()
            out[f"s{i}"] = [p.id for p in patches]
    return out


def test_changed_verdict_is_appended_and_counts_once(catalog):
    ids = add_slides(catalog)
    a, b = ids["s0"][0], ids["s0"][1]
    first = record_verdict(catalog, a, "lesion", "anna", 2.0, None)
    record_verdict(catalog, b, "not_lesion", "anna", 1.0, None)
    record_verdict(catalog, a, "lesion", "ben", 1.0, None)
    changed = change_verdict(catalog, a, "anna", "not_lesion")
    with catalog.session() as session:
        rows = session.scalars(select(Review).where(Review.patch_id == a).order_by(Review.id)).all()
        assert [(r.reviewer, r.verdict, r.undone_at) for r in rows] == [
            ("anna", "lesion", None), ("ben", "lesion", None), ("anna", "not_lesion", None)]  # nothing rewritten
        assert rows[-1].id == changed and rows[0].id == first
    # anna's latest (not_lesion) against ben's lesion: a tie, so no instance label for training
    assert instance_targets(catalog) == {b: 0}
    counts = verdict_counts(catalog)
    assert counts["by_reviewer"] == {"anna": {"not_lesion": 2}, "ben": {"lesion": 1}}  # anna's old lesion superseded
    assert counts["total"] == 3
    change_verdict(catalog, a, "ben", "not_lesion")
    assert instance_targets(catalog) == {a: 0, b: 0}


def test_export_sees_the_changed_verdict(catalog, workspace, tmp_path):
    ids = add_slides(catalog)
    a = ids["s1"][2]
    record_verdict(catalog, a, "lesion", "anna", 2.0, None)
    change_verdict(catalog, a, "anna", "artifact")
    for consensus in ("majority", "unanimous", "latest"):
        chosen = select_patches(catalog, Selection(consensus=consensus))
        assert [(p.patch_id, p.label) for p in chosen.patches] == [(a, "artifact")]
    out = tmp_path / "export"
    run_export(catalog, workspace, out, ExportOptions(format="csv"))
    with open(out / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["slide"], row["label"]) for row in rows] == [("s1.tiff", "artifact")]
    withdraw_verdict(catalog, a, "anna")
    assert select_patches(catalog, Selection()).patches == []


def test_withdraw_brings_no_earlier_verdict_back(catalog):
    ids = add_slides(catalog)
    a = ids["s0"][0]
    record_verdict(catalog, a, "lesion", "anna", 1.0, None)
    change_verdict(catalog, a, "anna", "not_lesion")
    record_verdict(catalog, a, "lesion", "ben", 1.0, None)
    assert withdraw_verdict(catalog, a, "anna") == 2
    assert withdraw_verdict(catalog, a, "anna") == 0
    assert instance_targets(catalog) == {a: 1}  # ben's verdict alone
    assert verdict_counts(catalog)["by_reviewer"] == {"ben": {"lesion": 1}}
    with catalog.session() as session:
        assert session.scalar(select(Review.id).where(Review.reviewer == "anna").limit(1)) is not None  # kept


def test_history_newest_first_with_filters(catalog):
    ids = add_slides(catalog)
    s0, s1 = ids["s0"], ids["s1"]
    record_verdict(catalog, s0[0], "lesion", "anna", 1.0, None)
    record_verdict(catalog, s1[0], "unsure", "anna", 1.0, None)
    record_verdict(catalog, s0[1], "artifact", "anna", 1.0, None)
    record_verdict(catalog, s0[2], "lesion", "ben", 1.0, None)  # someone else's: not in anna's history
    change_verdict(catalog, s0[0], "anna", "not_lesion")
    withdraw_verdict(catalog, s0[1], "anna")

    history = reviewer_history(catalog, "anna")
    assert [(h.patch_id, h.verdict) for h in history] == [
        (s0[1], WITHDRAWN), (s0[0], "not_lesion"), (s1[0], "unsure")]
    assert history[1].earlier == ("lesion",) and history[1].reviews == 2
    assert history[0].earlier == ("artifact",)
    assert all(h.changed_at.tzinfo is not None for h in history)
    assert history[1].slide_name == "s0.tiff" and (history[1].x, history[1].size) == (0, 224)
    slide1 = history[2].slide_id
    assert [h.patch_id for h in reviewer_history(catalog, "anna", slide_id=slide1)] == [s1[0]]
    assert [h.patch_id for h in reviewer_history(catalog, "anna", verdict="not_lesion")] == [s0[0]]
    assert [h.patch_id for h in reviewer_history(catalog, "anna", verdict=WITHDRAWN)] == [s0[1]]
    assert reviewer_history(catalog, "nobody") == []


def test_slide_labels_set_with_who_and_when(catalog):
    add_slides(catalog, n_slides=3)
    with catalog.session() as session:
        s0, s1, s2 = session.scalars(select(Slide.id).order_by(Slide.id)).all()
    assert needs_labels(catalog)
    assert known_labels(catalog) == [(label, 0) for label in SUGGESTED_LABELS]
    before = datetime.now(timezone.utc)
    set_slide_label(catalog, s0, " lesion ", "anna")
    assert known_labels(catalog) == [("lesion", 1), ("normal", 0)]  # the other class still offered
    set_slide_label(catalog, s1, "normal", "ben")
    set_slide_label(catalog, s2, "lesion", "ben")
    assert not needs_labels(catalog)
    assert known_labels(catalog) == [("lesion", 2), ("normal", 1)]
    assert slide_targets(catalog, "lesion")[0] == {s0: 1, s1: 0, s2: 1}  # what retrain trains on
    set_slide_label(catalog, s2, None, "anna")  # cleared: no longer a training slide
    assert slide_targets(catalog, "lesion")[0] == {s0: 1, s1: 0}
    with catalog.session() as session:
        rows = {s.id: (s.label, s.label_set_by, s.label_set_at) for s in session.scalars(select(Slide))}
    assert rows[s0][:2] == ("lesion", "anna") and rows[s2][:2] == (None, "anna")
    assert all(at is not None and at.replace(tzinfo=timezone.utc) >= before.replace(microsecond=0) for _, _, at in rows.values())


def test_verdicts_alone_are_enough_to_train(catalog):
    ids = add_slides(catalog)
    assert needs_labels(catalog)
    record_verdict(catalog, ids["s0"][0], "unsure", "anna", 1.0, None)
    assert needs_labels(catalog)  # unsure teaches nothing
    record_verdict(catalog, ids["s0"][1], "lesion", "anna", 1.0, None)
    assert not needs_labels(catalog)


def test_labels_csv_recorded_as_its_source_and_hints_for_a_cohort_without_labels(
        demo_workspace, demo_catalog, demo_cohort, tmp_path, capsys):
    """`add --labels` records the CSV as the labels' source; without any label, `add`, `status` and
    `retrain` all name the same first step (labelling slides), not each other."""
    from wsireview.cli import main

    with demo_catalog.session() as session:
        assert {s.label_set_by for s in session.scalars(select(Slide))} == {"csv:labels.csv"}
    ws = tmp_path / "unlabelled"
    assert main(["--workspace", str(ws), "add", str(demo_cohort / "demo-000.tiff")]) == 0
    assert "no slide has a label yet: label some slides first" in " ".join(capsys.readouterr().out.split())
    assert main(["--workspace", str(ws), "status"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "first step: no slide has a label yet" in out and "press `l`" in out
    assert main(["--workspace", str(ws), "retrain", "--encoder", "stain-stats", "--no-progress"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "error: nothing to learn from: no slide has a label yet" in err and "review some patches" not in err
    assert not (ws / "features").exists() or not any((ws / "features").iterdir())  # refused before embedding
