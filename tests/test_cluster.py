"""Embedding on a Dask cluster (`embed --cluster`, `retrain --cluster`): the same features as one process,
and a worker killed mid-slide loses nothing. One LocalCluster of 2 worker processes serves the module."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from sqlalchemy import func, select

from wsireview.catalog import ModelVersion, Patch, Slide, open_catalog
from wsireview.cli import main
from wsireview.features.cluster import embed_on_cluster
from wsireview.features.embed import EMBEDDED
from wsireview.features.stain import StainStats
from wsireview.features.store import feature_sets, load_features
from wsireview.workspace import Workspace

SLIDES = [1, 2, 3]  # a small cohort: three of the demo slides (about 170 patches each)


@pytest.fixture(scope="module")
def cluster_address():
    from dask.distributed import LocalCluster

    # The encoder below is defined here: workers get its code with the task, not by importing this file.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


class DiesOnce(StainStats):
    """stain-stats whose worker process dies at the third batch of a slide, once in the whole run: the
    first task to get there creates ``marker`` and exits its process on the spot (no clean-up)."""

    batch_size = 16  # about 11 batches a slide: the death is mid-slide

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = str(marker)
        self.batches = 0  # each task unpickles its own copy, so this counts one slide's batches

    def _embed_chunk(self, batch: np.ndarray) -> np.ndarray:
        self.batches += 1
        if self.batches == 3:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super()._embed_chunk(batch)


def reference_features(demo_embedded_template) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The single-process path's stain-stats features of the demo cohort, read back from its files."""
    catalog = open_catalog(demo_embedded_template.db_url)
    try:
        return {sid: load_features(demo_embedded_template, fs) for sid, fs in feature_sets(catalog, "stain-stats").items()}
    finally:
        catalog.close()


def assert_same_features(workspace, catalog, reference) -> None:
    """Every slide's features, read back from its file, equal the single-process ones: cosine 1.0 per patch."""
    recorded = feature_sets(catalog, "stain-stats")
    assert sorted(recorded) == SLIDES
    for slide_id in SLIDES:
        ids, features = load_features(workspace, recorded[slide_id])
        ref_ids, ref_features = reference[slide_id]
        np.testing.assert_array_equal(ids, ref_ids)
        a, b = features.astype(np.float64), ref_features.astype(np.float64)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert len(cosine) > 100 and cosine.min() > 1 - 1e-9
        with catalog.session() as session:
            n_patches = session.scalar(select(func.count()).select_from(Patch).where(Patch.slide_id == slide_id))
        assert recorded[slide_id].n_patches == n_patches == len(ids)
        assert recorded[slide_id].dim == features.shape[1]
    assert not list(workspace.features.rglob("*.partial*"))  # nothing half-written left behind


def test_cluster_embeds_the_same_features_as_one_process(cluster_address, demo_workspace, demo_embedded_template,
                                                         capsys):
    argv = ["--workspace", str(demo_workspace.root), "embed", "--encoder", "stain-stats", "--cluster", cluster_address,
            "--no-progress"]
    for slide_id in SLIDES:
        argv += ["--slide", str(slide_id)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "scikit-image; 2" in out and out.count("embedded") >= len(SLIDES)  # the backend: 2 workers
    catalog = open_catalog(demo_workspace.db_url)
    try:
        assert_same_features(demo_workspace, catalog, reference_features(demo_embedded_template))
    finally:
        catalog.close()
    # Run again: every slide is done, nothing is sent to the cluster.
    assert main(argv) == 0
    assert "Nothing to embed: 3 ready slides already have stain-stats features" in capsys.readouterr().out


def test_a_worker_killed_mid_slide_loses_nothing(cluster_address, demo_workspace, demo_catalog,
                                                 demo_embedded_template, tmp_path):
    marker = tmp_path / "a-worker-died"
    heard: list[float] = []
    report = embed_on_cluster(demo_catalog, demo_workspace, cluster_address, encoder=DiesOnce(marker),
                              slide_ids=SLIDES, on_progress=lambda what, fraction: heard.append(fraction))
    assert marker.exists()  # a worker process did exit in the middle of a slide
    assert sorted(r.slide_id for r in report.results) == SLIDES
    assert {r.outcome for r in report.results} == {EMBEDDED}
    assert_same_features(demo_workspace, demo_catalog, reference_features(demo_embedded_template))
    with demo_catalog.session() as session:  # the catalog's slides are untouched: none marked failed
        assert set(session.scalars(select(Slide.status).where(Slide.id.in_(SLIDES)))) == {"ready"}
    assert heard == sorted(heard) and heard[-1] == 1.0
    assert len([f for f in heard if 0 < f < 1]) == len(SLIDES) - 1  # one step per slide completed


def test_retrain_embeds_the_missing_slide_on_the_cluster(cluster_address, demo_embedded_template, tmp_path):
    """`retrain --cluster` hands its embedding step to the cluster: here the one slide whose features are gone."""
    workspace = Workspace.resolve(shutil.copytree(demo_embedded_template.root, tmp_path / "ws"))
    catalog = open_catalog(workspace.db_url)
    try:
        gone = feature_sets(catalog, "stain-stats")[1]
        assert workspace.absolute(gone.path) is not None
        workspace.absolute(gone.path).unlink()
        argv = ["--workspace", str(workspace.root), "retrain", "--encoder", "stain-stats", "--budget", "5",
                "--epochs", "2", "--cluster", cluster_address, "--no-progress"]
        assert main(argv) == 0
        ids, features = load_features(workspace, feature_sets(catalog, "stain-stats")[1])
        ref_ids, ref_features = reference_features(demo_embedded_template)[1]
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(features, ref_features)
        with catalog.session() as session:
            assert session.scalar(select(func.count()).select_from(ModelVersion)) == 1
    finally:
        catalog.close()


def test_a_malformed_local_cluster_is_refused_before_anything_runs(demo_workspace, capsys):
    argv = ["--workspace", str(demo_workspace.root), "embed", "--encoder", "stain-stats", "--cluster", "local:0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "local:N needs a number of worker processes" in err and len(err.strip().splitlines()) == 1


def test_a_slide_a_worker_cannot_see_fails_alone_and_stays_ready(cluster_address, demo_workspace, demo_catalog):
    """A worker without the shared filesystem must not mark slides unreadable: the slide is reported, not failed."""
    with demo_catalog.session() as session:
        session.get(Slide, 2).path = str(demo_workspace.root / "elsewhere" / "demo-001.tiff")
    report = embed_on_cluster(demo_catalog, demo_workspace, cluster_address, encoder="stain-stats", slide_ids=[1, 2])
    outcomes = {r.slide_id: r for r in report.results}
    assert outcomes[1].outcome == EMBEDDED and outcomes[2].outcome == "failed"
    assert "is not visible on the worker's machine" in (outcomes[2].reason or "")
    assert sorted(feature_sets(demo_catalog, "stain-stats")) == [1]
    with demo_catalog.session() as session:
        assert session.get(Slide, 2).status == "ready"
