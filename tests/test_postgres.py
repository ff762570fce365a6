"""The catalog on PostgreSQL (the team set-up): migrations and an ingest against a real server.

A throw-away cluster is started in a temporary folder with the machine's PostgreSQL binaries.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from wsireview.catalog import Patch, Slide, open_catalog
from wsireview.catalog.db import current_revision, downgrade, head_revision
from wsireview.learn.labels import known_labels, set_slide_label
from wsireview.learn.reviews import change_verdict, record_verdict, reviewer_history, verdict_counts
from wsireview.ingest import add_paths
from wsireview.workspace import Workspace


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb) are not installed")
    pytest.importorskip("psycopg")
    # initdb refuses to run as root: run the cluster as the `postgres` system user then.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to own a cluster")
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    if user:
        os.chmod(root, 0o777)
        for parent in list(root.parents)[:4]:
            os.chmod(parent, os.stat(parent).st_mode | 0o011)  # let postgres traverse to it

    def run(*cmd: str) -> None:
        full = ["runuser", "-u", "postgres", "--", *cmd] if user else list(cmd)
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    port = _free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-U", "wsireview", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "wsireview", "catalog")
        yield f"postgresql+psycopg://wsireview@127.0.0.1:{port}/catalog"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")


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
