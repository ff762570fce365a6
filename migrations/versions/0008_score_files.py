"""patch_scores move into one score file per model version; slides keep their patch count

Each version's rows of ``patch_scores`` are written to ``models/scores-<id>.npy`` in the workspace
(the format of ``wsireview.catalog.score_files``), ``model_versions.scores_path`` names the file,
and the table is dropped. ``slides.patch_count`` is filled from ``patches``. The workspace folder
comes from the caller (``cfg.attributes["workspace_root"]``: the catalog's ``root``); a catalog
with scores to move and no known workspace is refused, with nothing changed. Downgrading writes
the files' scores back into a ``patch_scores`` table (the files stay).

Revision ID: 0008_score_files
Revises: 0007_slide_evidence
Create Date: 2026-12-01
"""
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from alembic import context, op

revision = "0008_score_files"
down_revision = "0007_slide_evidence"
branch_labels = None
depends_on = None

FETCH = 100_000
COLUMNS = ("patch_ids", "slide_ids", "attention", "attention_rank", "probability", "uncertainty")  # write_scores's names


def _root() -> Path | None:
    root = context.config.attributes.get("workspace_root")
    return Path(root) if root is not None else None


def _version_scores(bind, version_id: int, n: int) -> dict[str, np.ndarray]:
    """One version's rows as columns, read in chunks (5 million rows as tuples would take GBs)."""
    out = {name: np.empty(n, dtype=np.float64 if name in ("attention", "probability", "uncertainty") else np.int64)
           for name in COLUMNS}
    result = bind.execute(sa.text(
        "SELECT s.patch_id, p.slide_id, s.attention, s.attention_rank, s.probability, s.uncertainty "
        "FROM patch_scores s JOIN patches p ON p.id = s.patch_id WHERE s.model_version_id = :v ORDER BY s.patch_id"),
        {"v": version_id})
    done = 0
    while rows := result.fetchmany(FETCH):
        block = np.array([tuple(r) for r in rows], dtype=np.float64)  # from Row objects: 25x slower
        for k, name in enumerate(COLUMNS):
            out[name][done:done + len(rows)] = block[:, k]
        done += len(rows)
    return {name: column[:done] for name, column in out.items()}


def upgrade() -> None:
    from wsireview.catalog.score_files import RootUnknown, score_file_name, write_scores

    bind = op.get_bind()
    counts = bind.execute(sa.text(
        "SELECT model_version_id, count(*) FROM patch_scores GROUP BY model_version_id ORDER BY model_version_id"
    )).all()
    root = _root()
    if counts and root is None:
        raise RootUnknown("moving the catalog's patch scores into score files needs the workspace folder: run "
                          "`wsireview --workspace DIR --db URL db upgrade`")
    # Plain ALTER TABLE, never a batch rebuild: rebuilding a table on SQLite drops the old one, and
    # with foreign keys on that deletes every row that references it (patches, reviews...).
    op.add_column("model_versions", sa.Column("scores_path", sa.Text()))
    op.add_column("slides", sa.Column("patch_count", sa.Integer()))
    bind.execute(sa.text("UPDATE slides SET patch_count = "
                         "(SELECT count(*) FROM patches WHERE patches.slide_id = slides.id)"))
    for version_id, n in counts:
        columns = _version_scores(bind, version_id, n)
        write_scores(root / "models", version_id, **columns)
        bind.execute(sa.text("UPDATE model_versions SET scores_path = :p WHERE id = :v"),
                     {"p": f"models/{score_file_name(version_id)}", "v": version_id})
    op.drop_index("ix_patch_scores_patch", table_name="patch_scores")
    op.drop_table("patch_scores")


def downgrade() -> None:
    bind = op.get_bind()
    stored = bind.execute(sa.text(
        "SELECT id, scores_path FROM model_versions WHERE scores_path IS NOT NULL ORDER BY id")).all()
    # ALTER TABLE DROP COLUMN (SQLite 3.35+): a batch rebuild of slides would cascade-delete the patches.
    op.drop_column("slides", "patch_count")
    op.drop_column("model_versions", "scores_path")
    patch_scores = op.create_table(
        "patch_scores",
        sa.Column("model_version_id", sa.Integer(),
                  sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("patch_id", sa.Integer(), sa.ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("attention", sa.Float(), nullable=False),
        sa.Column("attention_rank", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
    )
    op.create_index("ix_patch_scores_patch", "patch_scores", ["patch_id"])
    root = _root()
    for version_id, relative in stored:
        path = Path(relative) if Path(relative).is_absolute() else (root / relative if root is not None else None)
        if path is None or not path.exists():
            continue
        records = np.load(path, mmap_mode="r")
        for start in range(0, len(records), FETCH):
            block = records[start:start + FETCH]
            bind.execute(patch_scores.insert(), [
                {"model_version_id": version_id, "patch_id": int(r["patch_id"]), "attention": float(r["attention"]),
                 "attention_rank": int(r["attention_rank"]), "probability": float(r["probability"]),
                 "uncertainty": float(r["uncertainty"])} for r in block])
