"""The catalog on PostgreSQL (the team set-up): migrations and an ingest against a real server.

A throw-away cluster is started with the machine's PostgreSQL binaries (``tests/pg_server.py``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from wsireview.catalog import Patch, Slide, open_catalog
from wsireview.catalog.db import current_revision, downgrade, head_revision
from wsireview.learn.labels import known_labels, set_slide_label
from wsireview.learn.reviews import change_verdict, record_verdict, reviewer_history, verdict_counts
from wsireview.ingest import add_paths
from wsireview.workspace import Workspace

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_server) -> str:
    return pg_server.new_database()


def test_postgres_catalog_migrates_and_ingests(pg_url, tmp_path, real_slides):
    workspace = Workspace.resolve(tmp_path / "ws", pg_url).ensure()
    catalog = open_catalog(workspace.db_url)
    assert current_revision(catalog.engine) == head_revision()
    add_paths(catalog, workspace, [real_slides / "cmu-1-small-region.svs", real_slides / "corrupt-truncated.svs"])
    with catalog.session() as session:
        slides = {s.name: s for s in session.scalars(select(Slide))}
        assert slides["cmu-1-small-region.svs"].status == "ready"
        assert slides["corrupt-truncated.svs"].status == "failed"
        assert slides["cmu-1-small-region.svs"].level_downsamples == [1.0]  # JSON round-trips
        assert session.scalar(select(func.count()).select_from(Patch)) > 20
        patch_id = session.scalar(select(Patch.id).limit(1))
    # changing one's mind and labels (a correlated subquery, tz-aware times) on PostgreSQL too
    record_verdict(catalog, patch_id, "lesion", "anna", 1.0, None)
    change_verdict(catalog, patch_id, "anna", "not_lesion")
    assert verdict_counts(catalog)["by_verdict"] == {"not_lesion": 1}
    assert [(h.verdict, h.earlier) for h in reviewer_history(catalog, "anna")] == [("not_lesion", ("lesion",))]
    set_slide_label(catalog, slides["cmu-1-small-region.svs"].id, "lesion", "anna")
    assert known_labels(catalog)[0] == ("lesion", 1)
    downgrade(catalog.engine, "base")
    assert current_revision(catalog.engine) is None
    catalog.close()
