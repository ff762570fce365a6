"""The catalog: migrations up and down, SQLite settings, and migrations from an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from wsireview.catalog.db import current_revision, downgrade, head_revision, make_engine, upgrade, open_catalog

PROJECT = Path(__file__).resolve().parent.parent
TABLES = {"slides", "patches", "feature_sets", "model_versions", "slide_predictions", "review_queue", "reviews"}


def test_fresh_catalog_upgrades_to_head_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    catalog = open_catalog(url)
    assert current_revision(catalog.engine) == head_revision()
    assert TABLES <= set(inspect(catalog.engine).get_table_names())
    downgrade(catalog.engine, "base")
    assert current_revision(catalog.engine) is None
    assert not TABLES & set(inspect(catalog.engine).get_table_names())
    upgrade(catalog.engine)
    assert TABLES <= set(inspect(catalog.engine).get_table_names())
    catalog.close()


def test_sqlite_runs_with_wal_foreign_keys_and_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def test_migrations_are_one_chain_never_edited_in_place():
    versions = sorted(p.name for p in (PROJECT / "migrations" / "versions").glob("*.py"))
    assert versions[0].startswith("0001_")
    # Each later table has its own migration; slides and patches are the first.
    first = (PROJECT / "migrations" / "versions" / versions[0]).read_text()
    assert "create_table(\n        \"slides\"" in first and "reviews" not in first


@pytest.mark.slow
def test_migrations_work_from_an_installed_wheel(tmp_path):
    """Build the wheel, install it outside the checkout, and open a catalog from there."""
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(PROJECT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("wsireview-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "wsireview/_migrations/env.py" in names
    assert any(n.startswith("wsireview/_migrations/versions/0001_") for n in names)
    for static in ("openseadragon/openseadragon.min.js", "openseadragon/LICENSE.txt", "viewer.html", "viewer.js"):
        assert f"wsireview/serve/static/{static}" in names  # the browser viewer loads nothing from the internet

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    script = (
        "import wsireview, sys; from wsireview.catalog.db import migrations_dir, open_catalog, current_revision;"
        f"assert wsireview.__file__.startswith({str(target)!r}), wsireview.__file__;"
        "c = open_catalog('sqlite:///cat.sqlite'); print(migrations_dir()); print(current_revision(c.engine))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=outside, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    where, revision = run.stdout.split()
    assert where.startswith(str(target)) and revision == head_revision()
