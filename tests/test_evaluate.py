"""evaluate: a held-out test split no round trains on, several seeds with mean and spread, queue yield."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from wsireview.catalog import ModelVersion, Patch, ReviewQueueItem, Slide, SlidePrediction, open_catalog
from wsireview.cli import main as cli_main
from wsireview.learn.evaluate import Simulation, check_never_trained_on, copy_catalog, hold_out, split_test_slides
from wsireview.learn.labels import instance_targets, slide_targets
from wsireview.learn.round import retrain
from wsireview.learn.spec import RoundSpec
from wsireview.workspace import Workspace

ENCODER = "stain-stats"


def test_test_split_is_stratified_seeded_and_leaves_two_per_class_for_training():
    targets = {i: int(i % 2 == 0) for i in range(1, 25)}  # 12 positive, 12 negative
    held = split_test_slides(targets, 1 / 3, seed=0)
    assert sum(targets[i] for i in held) == 4 and len(held) == 8
    assert split_test_slides(targets, 1 / 3, seed=0) == held
    assert split_test_slides(targets, 1 / 3, seed=1) != held
    assert split_test_slides(targets, 0, seed=0) == set()
    # 3 of a class: one held out, two left for cross-validation; 2 of a class: none held out.
    small = {1: 1, 2: 1, 3: 1, 4: 0, 5: 0}
    held = split_test_slides(small, 1 / 3, seed=0)
    assert len(held & {1, 2, 3}) == 1 and not held & {4, 5}


@pytest.fixture(scope="module")
def embedded(demo_embedded_template, tmp_path_factory) -> Workspace:
    """This module's copy of the demo cohort embedded with stain-stats."""
    target = tmp_path_factory.mktemp("eval-demo") / "ws"
    shutil.copytree(demo_embedded_template.root, target)
    return Workspace.resolve(target)


def test_held_out_slides_are_predicted_but_never_trained_on(embedded, tmp_path):
    source = open_catalog(embedded.db_url)
    targets, _ = slide_targets(source, "lesion")
    held = split_test_slides(targets, 1 / 3, seed=0)
    assert len(held) == 2 and {targets[i] for i in held} == {0, 1}
    ws = Workspace.resolve(tmp_path / "copy").ensure()
    copy = open_catalog(ws.db_url)
    copy_catalog(source, embedded, copy)
    source.close()
    hold_out(copy, held)
    check_never_trained_on(copy, Simulation(encoder=ENCODER), held)
    result = retrain(copy, ws, RoundSpec(encoder=ENCODER, budget=30, seed=0))
    # What training saw, read back from the model version: the 4 training slides, the 2 held out unlabelled.
    with copy.session() as session:
        version = session.get(ModelVersion, result.model_version_id)
        assert version.label_counts["slides"] == {"positive": 2, "negative": 2, "unlabelled": 2}
        assert version.label_counts["patches"] == {"lesion": 0, "not_lesion": 0}
        held_patches = set(session.scalars(select(Patch.id).where(Patch.slide_id.in_(held))))
        queued = set(session.scalars(select(ReviewQueueItem.patch_id)
                                     .where(ReviewQueueItem.model_version_id == result.model_version_id)))
        predicted = dict(session.execute(select(SlidePrediction.slide_id, SlidePrediction.probability)
                                         .where(SlidePrediction.model_version_id == result.model_version_id)).all())
        labels = dict(session.execute(select(Slide.id, Slide.label)).all())
    assert len(queued) == 30 and not queued & held_patches
    assert not set(instance_targets(copy)) & held_patches
    assert held <= set(predicted) and all(labels[i] is None for i in held)
    copy.close()


@pytest.mark.slow
def test_evaluate_with_seeds_reports_mean_spread_test_auc_and_yield(embedded, demo_cohort, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli_main(["--workspace", str(embedded.root), "evaluate", "--truth", str(demo_cohort), "--encoder", ENCODER,
                     "--rounds", "1", "--budget", "8", "--strategies", "mix,random", "--seeds", "0,1",
                     "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [(r["seed"], r["strategy"], r["round"]) for r in rows] == [
        (s, st, r) for s in ("0", "1") for st in ("mix", "random") for r in ("0", "1")]
    assert all(r["test_slide_auc"] != "" and 0 <= float(r["test_slide_auc"]) <= 1 for r in rows)
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["strategy"], r["round"], r["seeds"]) for r in summary] == [
        ("mix", "0", "2"), ("mix", "1", "2"), ("random", "0", "2"), ("random", "1", "2")]
    for r in summary:  # the mean is the mean of the two seeds' rows
        pair = [float(x["instance_auc"]) for x in rows if (x["strategy"], x["round"]) == (r["strategy"], r["round"])]
        assert float(r["instance_auc_mean"]) == pytest.approx(np.mean(pair))
        assert float(r["instance_auc_sd"]) == pytest.approx(np.std(pair, ddof=1))
    # Yield: every round-0 queue was reviewed in full, by reason; mix queues for its reasons, random at random.
    yields = list(csv.DictReader((out / "yield.csv").open()))
    for seed in ("0", "1"):
        for strategy, reasons in (("mix", {"exploit", "top-attention", "uncertain", "diverse"}), ("random", {"random"})):
            mine = [y for y in yields if (y["seed"], y["strategy"], y["round"]) == (seed, strategy, "0")]
            assert sum(int(y["queued"]) for y in mine) == 8 and {y["reason"] for y in mine} <= reasons
            found = next(int(x["lesion_found"]) for x in rows if (x["seed"], x["strategy"], x["round"]) == (seed, strategy, "1"))
            assert sum(int(y["lesion"]) for y in mine) == found
    assert re.search(r"\d\.\d{3} ±", printed.out) and "Queue yield" in printed.out  # a "mean ± sd" cell
    assert "Test split (never trained on): seed 0: demo-" in printed.out
    image = np.asarray(Image.open(out / "curve.png").convert("L"))
    assert image.shape[1] > 1200 and image.std() > 10  # three panels
    assert cli_main(["--workspace", str(embedded.root), "evaluate", "--truth", str(demo_cohort),
                     "--seeds", "0,x"]) == 2
