"""Shared fixtures: the real slides, fresh workspaces, and one small demo cohort per test session."""

from __future__ import annotations

import os
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


# -- PostgreSQL: one throw-away server per session, a fresh database per test -----------------------

@pytest.fixture(scope="module")
def one_torch_thread():
    """Two cores are shared by the whole suite: a module that trains or embeds computes on one
    (module fixtures included)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_torchscript(tmp_path) -> Path:
    """A tiny TorchScript encoder saved to a file (``torch_support.TinyEncoder``)."""
    from torch_support import save_tiny_torchscript

    return save_tiny_torchscript(tmp_path / "tiny.pt")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A PostgreSQL server started with the machine's binaries (skipped where there are none, which
    fails the run in CI: see ``pytest_runtest_makereport``)."""
    from pg_server import NoPostgres, throwaway_postgres

    try:
        with throwaway_postgres(tmp_path_factory.mktemp("pg")) as server:
            yield server
    except NoPostgres as error:
        pytest.skip(str(error))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catalog_url(request, tmp_path) -> str:
    """An empty catalog's URL on each database the team set-up supports: tests of the catalog's
    concurrency take this fixture, so they run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("pg_server").new_database()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI ($CI set), a PostgreSQL test that skips fails: CI must prove the shared-catalog path."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") and item.get_closest_marker("postgres"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"a PostgreSQL test skipped in CI ({reason}); CI must run it (.ci/run installs postgresql)"
