"""Shared fixtures: the real slides, fresh workspaces, and one small demo cohort per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wsireview.catalog import open_catalog
from wsireview.workspace import Workspace

PROJECT = Path(__file__).resolve().parent.parent
# Real slides and deliberately broken files, kept in the repository (see tests/data/slides/README.md).
TEST_SLIDES = PROJECT / "tests" / "data" / "slides"

# The small cohort most tests share: 6 slides (lesion and normal), generated once per session.
DEMO_SLIDES = 6
DEMO_SEED = 7


@pytest.fixture(scope="session")
def real_slides() -> Path:
    if not TEST_SLIDES.is_dir():
        pytest.fail(f"the real test slides are missing: expected them in {TEST_SLIDES}")
    return TEST_SLIDES


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace.resolve(tmp_path / "ws").ensure()


@pytest.fixture
def catalog(workspace):
    cat = open_catalog(workspace.db_url)
    yield cat
    cat.close()


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    """A small generated cohort (slides, labels.csv, ground-truth GeoJSON); read-only for tests."""
    from wsireview.demo import generate_cohort

    out = tmp_path_factory.mktemp("demo") / "cohort"
    generate_cohort(out, n_slides=DEMO_SLIDES, size="small", seed=DEMO_SEED)
    return out


@pytest.fixture(scope="session")
def demo_workspace_template(demo_cohort, tmp_path_factory) -> Workspace:
    """The demo cohort ingested with its labels, once per session. Copy it before changing it."""
    from wsireview.ingest import add_paths

    ws = Workspace.resolve(tmp_path_factory.mktemp("demo-ws") / "ws").ensure()
    cat = open_catalog(ws.db_url)
    add_paths(cat, ws, [demo_cohort], labels_csv=demo_cohort / "labels.csv")
    cat.close()
    return ws


@pytest.fixture(scope="session")
def demo_embedded_template(demo_workspace_template, tmp_path_factory) -> Workspace:
    """The ingested demo cohort embedded once with the fast stain-stats encoder. Copy it before changing it."""
    from wsireview.features.embed import embed_slides

    target = tmp_path_factory.mktemp("demo-embedded") / "ws"
    shutil.copytree(demo_workspace_template.root, target)
    ws = Workspace.resolve(target)
    cat = open_catalog(ws.db_url)
    embed_slides(cat, ws, encoder="stain-stats")
    cat.close()
    return ws


@pytest.fixture
def demo_workspace(demo_workspace_template, tmp_path) -> Workspace:
    """A private copy of the ingested demo workspace (catalog, thumbnails, masks)."""
    target = tmp_path / "ws"
    shutil.copytree(demo_workspace_template.root, target)
    return Workspace.resolve(target)


@pytest.fixture
def demo_catalog(demo_workspace):
    cat = open_catalog(demo_workspace.db_url)
    yield cat
    cat.close()
