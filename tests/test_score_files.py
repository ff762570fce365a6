"""Per-patch scores in score files: written and read back, migrated from the catalog's old
``patch_scores`` table, pruned, and written without holding the catalog's write lock."""

from __future__ import annotations

import threading
import time
from contextlib import closing

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text

import wsireview.learn.round as round_module
from wsireview.catalog import ModelVersion, Patch, Review, Slide, open_catalog
from wsireview.catalog.db import current_revision, downgrade, head_revision, make_engine, upgrade
from wsireview.catalog.queries import queue_entries, slide_attention, slides_overview
from wsireview.catalog.score_files import (
    SCORE_FIELDS,
    SCORES_OK,
    SCORES_PRUNED,
    ScoreFile,
    version_scores,
    write_scores,
)
from wsireview.cli import main
from wsireview.files import ordinary_mode
from wsireview.learn.reviews import record_verdict
from wsireview.learn.round import retrain
from wsireview.learn.spec import RoundSpec
from wsireview.learn.synthetic import make_synthetic_cohort
from wsireview.workspace import Workspace

from tui_support import add_slide_rows, make_queue

BEFORE_SCORE_FILES = "0007_slide_evidence"


def test_a_score_file_is_sorted_by_patch_id_and_looks_patches_up(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(10, 1010, 2))  # even ids, shuffled
    att, prob = rng.uniform(size=ids.size), rng.uniform(size=ids.size)
    path = write_scores(tmp_path, 7, patch_ids=ids, slide_ids=ids // 100, attention=att,
                        attention_rank=np.arange(1, ids.size + 1), probability=prob, uncertainty=1 - prob)
    assert path.name == "scores-7.npy" and not list(tmp_path.glob(".scores-*"))  # renamed into place
    assert path.stat().st_mode & 0o777 == ordinary_mode()  # not mkstemp's 0600
    plain = np.load(path)  # an ordinary .npy of records
    assert plain.dtype == np.dtype(SCORE_FIELDS) and np.all(np.diff(plain["patch_id"]) > 0)
    scores = ScoreFile.open(path)
    assert isinstance(scores.records, np.memmap) and len(scores) == ids.size
    k = int(np.flatnonzero(ids == 500)[0])
    found = scores.lookup([500, 501, 9999, 10, 1008])  # odd, and past either end: not scored
    assert set(found) == {500, 10, 1008}
    assert found[500].probability == pytest.approx(prob[k], abs=1e-7)
    assert found[500].attention == pytest.approx(att[k], abs=1e-7) and found[500].attention_rank == k + 1
    assert ScoreFile.open(path).lookup([]) == {}


def _catalog_at_0007(ws: Workspace) -> dict[int, dict[int, tuple[float, int, float, float]]]:
    """A catalog made at revision 0007: 3 slides, 2 versions with patch_scores rows (version 3 none)."""
    engine = make_engine(ws.db_url)
    upgrade(engine, BEFORE_SCORE_FILES)
    rng = np.random.default_rng(1)
    expected: dict[int, dict[int, tuple[float, int, float, float]]] = {1: {}, 2: {}}
    with engine.begin() as c:
        for sid in (1, 2, 3):
            c.execute(text("INSERT INTO slides (id, name, path, status, created_at, updated_at) "
                           "VALUES (:id, :n, :p, 'ready', '2026-01-01', '2026-01-01')"),
                      {"id": sid, "n": f"s{sid}.svs", "p": f"/nowhere/s{sid}.svs"})
        pid = 0
        for sid, n in ((1, 40), (2, 25), (3, 0)):
            for k in range(n):
                pid += 1
                c.execute(text("INSERT INTO patches (id, slide_id, x, y, size, tissue_fraction) "
                               "VALUES (:id, :s, :x, 0, 224, 1.0)"), {"id": pid, "s": sid, "x": 224 * k})
        for vid in (1, 2, 3):
            c.execute(text("INSERT INTO model_versions (id, encoder, positive_label, params, label_counts, metrics, "
                           "status, created_at) VALUES (:id, 'e', 'lesion', '{}', '{}', '{}', 'ready', '2026-01-01')"),
                      {"id": vid})
        for vid in (1, 2):
            for p in rng.permutation(np.arange(1, pid + 1)).tolist():
                row = (float(rng.uniform()), int(rng.integers(1, 40)), float(rng.uniform()), float(rng.uniform()))
                expected[vid][p] = row
                c.execute(text("INSERT INTO patch_scores VALUES (:v, :p, :a, :r, :pr, :u)"),
                          {"v": vid, "p": p, "a": row[0], "r": row[1], "pr": row[2], "u": row[3]})
        c.execute(text("INSERT INTO review_queue (model_version_id, patch_id, rank, reason) VALUES (2, 3, 1, 'exploit')"))
    engine.dispose()
    return expected


def test_migrating_a_0007_catalog_moves_every_versions_scores_into_files_and_back(workspace):
    expected = _catalog_at_0007(workspace)
    with closing(open_catalog(workspace.db_url)) as cat:  # opening migrates to head
        assert current_revision(cat.engine) == head_revision()
        assert "patch_scores" not in inspect(cat.engine).get_table_names()
        for vid, rows in expected.items():
            scores = version_scores(cat, vid)
            assert scores is not None and len(scores) == len(rows) == 65
            found = scores.lookup(rows)
            for pid, (att, rank, prob, unc) in rows.items():
                got = found[pid]
                assert (got.attention, got.attention_rank, got.probability, got.uncertainty) == pytest.approx(
                    (att, rank, prob, unc), abs=1e-6)
            slide_of = dict(zip(scores.column("patch_id").tolist(), scores.column("slide_id").tolist()))
            assert slide_of[1] == 1 and slide_of[41] == 2 and slide_of[65] == 2
        assert version_scores(cat, 3) is None  # no rows: no file
        with cat.session() as s:
            paths = dict(s.execute(select(ModelVersion.id, ModelVersion.scores_path)).all())
            counts = dict(s.execute(select(Slide.id, Slide.patch_count)).all())
        assert paths == {1: "models/scores-1.npy", 2: "models/scores-2.npy", 3: None}
        assert counts == {1: 40, 2: 25, 3: 0}
        [entry] = queue_entries(cat, model_version_id=2)
        assert entry.probability == pytest.approx(expected[2][3][2], abs=1e-6)
        assert len(slide_attention(cat, 2, model_version_id=1)) == 25
        assert [s.patches for s in slides_overview(cat)] == [40, 25, 0]

        downgrade(cat.engine, BEFORE_SCORE_FILES, root=workspace.root)  # the rows come back from the files
        with cat.engine.connect() as c:
            back = c.execute(text("SELECT model_version_id, patch_id, probability FROM patch_scores")).all()
            patches = c.execute(text("SELECT count(*) FROM patches")).scalar()
        assert len(back) == 130 and all(p == pytest.approx(expected[v][pid][2], abs=1e-6) for v, pid, p in back)
        assert patches == 65  # no table was rebuilt (a rebuild of slides would cascade-delete them)


def test_prune_keeps_the_newest_versions_scores_and_every_row(workspace, catalog, capsys):
    add_slide_rows(catalog, 3, patches_each=20)
    versions = [make_queue(catalog, per_slide=2, seed=s) for s in range(3)]
    record_verdict(catalog, queue_entries(catalog, model_version_id=versions[0])[0].patch_id, "lesion", "ann",
                   model_version_id=versions[0])
    files = [catalog.root / "models" / f"scores-{v}.npy" for v in versions]
    freed = sum(f.stat().st_size for f in files[:2])
    capsys.readouterr()
    assert main(["--workspace", str(workspace.root), "db", "prune", "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 versions (v1, v2)" in out and "2 files deleted" in out and f"{freed / 1e3:.0f} kB freed" in out
    assert [f.exists() for f in files] == [False, False, True]
    with catalog.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 3
        assert s.scalar(select(func.count()).select_from(Review)) == 1
    # An old version's queue still reads, without scores; status and the model list say why.
    old = queue_entries(catalog, model_version_id=versions[0])
    assert len(old) == 6 and all(e.attention is None and e.probability is None for e in old)
    assert all(e.probability is not None for e in queue_entries(catalog))
    assert main(["--workspace", str(workspace.root), "status"]) == 0
    assert "scores pruned: 2 versions (v1, v2)" in capsys.readouterr().out
    from wsireview.catalog.queries import model_versions
    assert {v.id: v.scores for v in model_versions(catalog)} == {3: SCORES_OK, 2: SCORES_PRUNED, 1: SCORES_PRUNED}
    assert main(["--workspace", str(workspace.root), "db", "check"]) == 0  # nothing left behind
    assert main(["--workspace", str(workspace.root), "db", "prune", "--keep", "1"]) == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert main(["--workspace", str(workspace.root), "db", "prune", "--keep", "0"]) == 2


def test_a_verdict_during_a_rounds_write_waits_only_a_short_transaction(workspace, catalog, monkeypatch):
    """Writing the scores (here made to take 1.5 s, as millions of patches would) holds no lock:
    verdicts recorded meanwhile by another thread wait for nothing longer than the short transaction."""
    cohort = make_synthetic_cohort(catalog, workspace, "synthetic", n_slides=8, n_patches=40, dim=16, seed=3)
    with catalog.session() as s:
        patch_ids = s.scalars(select(Patch.id).order_by(Patch.id)).all()
    real_stage = round_module.stage_scores
    writing = threading.Event()

    def slow_stage(*args, **kwargs):
        writing.set()
        time.sleep(1.5)
        return real_stage(*args, **kwargs)

    monkeypatch.setattr(round_module, "stage_scores", slow_stage)
    waits: list[float] = []
    during_write = 0
    done = threading.Event()

    def reviewer() -> None:
        nonlocal during_write
        reviewer_catalog = open_catalog(workspace.db_url)  # a second connection, as a second process has
        try:
            for pid in patch_ids:
                if done.is_set():
                    break
                t = time.perf_counter()
                record_verdict(reviewer_catalog, pid, "unsure", "concurrent")
                waits.append(time.perf_counter() - t)
                during_write += writing.is_set()
                time.sleep(0.01)
        finally:
            reviewer_catalog.close()

    thread = threading.Thread(target=reviewer)
    thread.start()
    try:
        result = retrain(catalog, workspace, RoundSpec(encoder="synthetic", budget=5, epochs=2))
    finally:
        done.set()
        thread.join()
    assert result.model_version_id and version_scores(catalog, result.model_version_id) is not None
    assert len(cohort.slide_ids) == 8 and during_write >= 20  # verdicts kept coming while the scores were written
    p99 = float(np.percentile(waits, 99))
    assert max(waits) < 1.0, f"a verdict waited {max(waits):.2f} s (p99 {p99 * 1000:.0f} ms)"
