"""The command line's answers to mistakes: one line saying what is wrong and what to do, the right
exit code (2 bad usage, 1 failure), no traceback, and nothing half-done left behind."""

from __future__ import annotations

import os
import shlex
import socket

from pathlib import Path

import pytest
from sqlalchemy import func, select

from wsireview.catalog import ModelVersion, Slide, open_catalog
from wsireview.cli import build_parser, main
from wsireview.workspace import Workspace


def _one_line_error(err: str) -> str:
    """The stderr of a refused command: exactly one line, no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _flat(text: str) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(text.split())


def _labels(ws) -> dict[str, str | None]:
    catalog = open_catalog(ws.db_url)
    try:
        with catalog.session() as session:
            return dict(session.execute(select(Slide.name, Slide.label)).all())
    finally:
        catalog.close()


def _model_versions(ws) -> int:
    catalog = open_catalog(ws.db_url)
    try:
        with catalog.session() as session:
            return session.scalar(select(func.count()).select_from(ModelVersion))
    finally:
        catalog.close()


# -- 1. labels CSV --------------------------------------------------------------------------------

def test_empty_label_cell_is_skipped_with_a_warning_not_erased(demo_workspace, demo_cohort, tmp_path, capsys):
    before = _labels(demo_workspace)
    assert before["demo-000.tiff"] and before["demo-001.tiff"]
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,label\ndemo-000.tiff,\ndemo-001.tiff,normal\n")
    code = main(["--workspace", str(demo_workspace.root), "add", str(demo_cohort / "demo-000.tiff"),
                 str(demo_cohort / "demo-001.tiff"), "--labels", str(labels)])
    assert code == 0
    out = _flat(capsys.readouterr().out)
    assert "label row 2 has an empty label, skipped: 'demo-000.tiff'" in out
    after = _labels(demo_workspace)
    assert after["demo-000.tiff"] == before["demo-000.tiff"]  # kept, not erased
    assert after["demo-001.tiff"] == "normal"


@pytest.mark.parametrize("content, says", [
    ("slide;label\ndemo-000.tiff;lesion\n", "semicolon-separated"),
    ("demo-000.tiff\ndemo-001.tiff\n", "expected two comma-separated columns slide,label"),
    ("label,slide\nlesion,demo-000.tiff\n", "the columns must be slide,label"),
])
def test_malformed_labels_csv_is_refused_before_anything_is_ingested(demo_cohort, tmp_path, capsys, content, says):
    labels = tmp_path / "labels.csv"
    labels.write_text(content)
    ws = tmp_path / "ws"
    code = main(["--workspace", str(ws), "add", str(demo_cohort / "demo-000.tiff"), "--labels", str(labels)])
    assert code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert says in line and "labels.csv:1" in line and "fix the labels file" in line
    assert not (ws / "catalog.sqlite").exists()  # nothing was ingested


def test_label_differing_only_by_case_warns(demo_workspace, demo_cohort, tmp_path, capsys):
    assert "lesion" in _labels(demo_workspace).values()
    labels = tmp_path / "labels.csv"
    labels.write_text("demo-001.tiff,Lesion\n")
    code = main(["--workspace", str(demo_workspace.root), "add", str(demo_cohort / "demo-001.tiff"),
                 "--labels", str(labels)])
    assert code == 0
    out = _flat(capsys.readouterr().out)
    assert "labels 'Lesion', 'lesion' differ only by case or spaces" in out
    assert _labels(demo_workspace)["demo-001.tiff"] == "Lesion"  # stored as given: the user decides


# -- 2. encoders and catalog URLs -----------------------------------------------------------------

@pytest.mark.parametrize("command", [["retrain", "--no-progress"], ["evaluate", "--truth", "TRUTH"]])
def test_unknown_encoder_is_a_usage_error(demo_workspace, demo_cohort, capsys, command):
    command = [str(demo_cohort) if word == "TRUTH" else word for word in command]
    code = main(["--workspace", str(demo_workspace.root), *command, "--encoder", "nosuch"])
    assert code == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("error: unknown encoder 'nosuch': choose one of effnet-lite0, stain-stats")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, code, says", [
    ("bogus://x", 2, "cannot use the catalog URL bogus://x"),
    ("postgresql+psycopg://anna:secret@127.0.0.1:{port}/wsireview", 1, "cannot open the catalog at"),
])
def test_catalog_url_that_cannot_be_opened_is_one_line(tmp_path, monkeypatch, capsys, url, code, says):
    monkeypatch.chdir(tmp_path)
    assert main(["--db", url.format(port=_closed_port()), "status"]) == code
    line = _one_line_error(capsys.readouterr().err)
    assert says in line and "--db" in line
    assert "secret" not in line  # the password is never printed
    assert not (tmp_path / "data").exists()  # no workspace folder left behind


# -- 3. retrain options ---------------------------------------------------------------------------

@pytest.mark.parametrize("option, says", [
    (["--epochs", "0"], "--epochs must be 1 or more"),
    (["--instance-weight", "-1"], "--instance-weight must be 0 or more"),
    (["--distill", "-0.5"], "--distill must be 0 or more"),
])
def test_retrain_refuses_option_values_training_cannot_use(demo_workspace, capsys, option, says):
    code = main(["--workspace", str(demo_workspace.root), "retrain", "--encoder", "stain-stats", "--no-progress",
                 *option])
    assert code == 2
    assert _one_line_error(capsys.readouterr().err) == f"error: {says}"
    assert _model_versions(demo_workspace) == 0


def test_retrain_refuses_a_positive_label_no_slide_carries(demo_workspace, capsys):
    code = main(["--workspace", str(demo_workspace.root), "retrain", "--encoder", "stain-stats", "--no-progress",
                 "--positive", "Lesion"])
    assert code == 1
    line = _one_line_error(capsys.readouterr().err)
    assert "no slide is labelled 'Lesion'" in line
    assert "'lesion' (3), 'normal' (3)" in line and "--positive" in line
    assert _model_versions(demo_workspace) == 0


def test_retrain_budget_zero_and_the_review_hint(demo_workspace, capsys):
    ws = str(demo_workspace.root)
    assert main(["--workspace", ws, "retrain", "--encoder", "stain-stats", "--no-progress", "--budget", "0"]) == 0
    out = _flat(capsys.readouterr().out)
    assert "No review queue was built (--budget 0)" in out
    assert "queued for review" not in out and "triage screen" not in out

    assert main(["--workspace", ws, "retrain", "--encoder", "stain-stats", "--no-progress", "--budget", "3"]) == 0
    out = _flat(capsys.readouterr().out)
    assert "3 patches queued for review" in out
    assert f"Review them in the triage screen: `wsireview --workspace {shlex.quote(ws)} review`" in out


def test_retrain_help_names_the_review_command():
    parser = build_parser(["retrain"])
    sub = next(a for a in parser._actions if a.dest == "command").choices["retrain"]
    assert "Next: `wsireview review` (triage screen)" in sub.epilog


# -- 4. a mistyped workspace ----------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["status"], ["status", "--json"], ["export", "OUT"], ["embed", "--encoder", "stain-stats"],
    ["retrain", "--encoder", "stain-stats"], ["evaluate", "--truth", "TRUTH", "--encoder", "stain-stats"],
])
def test_commands_refuse_a_workspace_without_catalog_and_create_nothing(tmp_path, demo_cohort, capsys, command):
    typo = tmp_path / "typo"
    command = [str(tmp_path / "out") if w == "OUT" else str(demo_cohort) if w == "TRUTH" else w for w in command]
    assert main(["--workspace", str(typo), *command]) == 1
    line = _one_line_error(capsys.readouterr().err)
    assert line == (f"error: no catalog at {typo / 'catalog.sqlite'}: add slides with `wsireview add` first, "
                    "or check --workspace")
    assert not typo.exists() and not (tmp_path / "out").exists()


# -- 5. evaluate's ground truth -------------------------------------------------------------------

def test_evaluate_refuses_a_truth_folder_matching_no_slide(demo_workspace, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "other-slide.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    for folder, says in ((empty, "it holds no .geojson file"), (unrelated, "its 1 .geojson file matches no slide")):
        code = main(["--workspace", str(demo_workspace.root), "evaluate", "--truth", str(folder),
                     "--encoder", "stain-stats", "--rounds", "0", "--strategies", "random"])
        assert code == 1
        line = _one_line_error(capsys.readouterr().err)
        assert f"no ground truth for any catalog slide in {folder}" in line
        assert "demo-000.geojson" in line and says in line and "check --truth" in line
    assert not (demo_workspace.root / "evaluations").exists()  # refused before any work
    assert not (demo_workspace.root / "features").exists()


# -- 6. add on paths without slides ---------------------------------------------------------------

def test_add_a_path_that_does_not_exist(tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "add", str(tmp_path / "nowhere")]) == 1
    captured = capsys.readouterr()
    assert _one_line_error(captured.err) == f"error: not found: {tmp_path / 'nowhere'}: check the path"
    assert "Ingest" not in captured.out and "0 added" not in captured.out  # no empty table
    assert not ws.exists()


def test_add_a_folder_without_slide_files(tmp_path, demo_cohort, capsys):
    ws, folder = tmp_path / "ws", tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("not a slide")
    assert main(["--workspace", str(ws), "add", str(folder)]) == 1
    captured = capsys.readouterr()
    assert _one_line_error(captured.err).startswith(f"error: no slide files found in {folder}: give slide files")
    assert "Ingest" not in captured.out and not ws.exists()

    (folder / "sub" / "demo-000.tiff").symlink_to(demo_cohort / "demo-000.tiff")
    assert main(["--workspace", str(ws), "add", str(folder)]) == 1
    assert _one_line_error(capsys.readouterr().err) == (
        f"error: no slide files found in {folder}: its sub-folders hold some, add --recursive")


# -- 7 and 8. next-step hints and counts ----------------------------------------------------------

def test_demo_hint_keeps_the_workspace(tmp_path, capsys):
    ws = tmp_path / "my ws"
    assert main(["--workspace", str(ws), "demo", "--slides", "1", "--size", "1024x1024", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    cohort = ws / "demo-cohort"
    command = (f"wsireview --workspace {shlex.quote(str(ws))} add {shlex.quote(str(cohort))} "
               f"--labels {shlex.quote(str(cohort / 'labels.csv'))}")
    assert f"Next: {command}\n" in out  # whole, on one line, ready to copy
    assert main(shlex.split(command)[1:]) == 0  # and it works as printed
    assert (ws / "catalog.sqlite").exists()


def test_status_counts_are_singular(tmp_path, demo_cohort, capsys):
    ws = str(tmp_path / "ws")
    assert main(["--workspace", ws, "add", str(demo_cohort / "demo-000.tiff")]) == 0
    capsys.readouterr()
    assert main(["--workspace", ws, "status"]) == 0
    assert "1 slide (1 ready); " in _flat(capsys.readouterr().out)


@pytest.mark.parametrize("option", [["--rounds", "-1"], ["--budget", "0"]])
def test_evaluate_refuses_rounds_and_budget_it_cannot_run(demo_workspace, tmp_path, capsys, option):
    evaluations = demo_workspace.root / "evaluations"
    before = sorted(evaluations.iterdir()) if evaluations.exists() else []
    code = main(["--workspace", str(demo_workspace.root), "evaluate", "--truth", str(tmp_path), *option])
    assert code == 2
    assert "--rounds must be 0 or more and --budget 1 or more" in _one_line_error(capsys.readouterr().err)
    assert (sorted(evaluations.iterdir()) if evaluations.exists() else []) == before  # nothing written


# -- 9. one error style ---------------------------------------------------------------------------

@pytest.mark.parametrize("command, code, says", [
    (["demo", "--size", "10x10"], 2, "error: a demo slide needs at least 1024 px a side, got 10x10"),
    (["demo", "--slides", "0"], 2, "error: --slides must be at least 1"),
    (["add", "SLIDE", "--labels", "MISSING"], 2, "error: labels file not found: MISSING"),
    (["add", "SLIDE", "--min-tissue", "0"], 2, "error: --min-tissue must be in (0, 1]"),
    (["evaluate", "--truth", "MISSING"], 2, "error: --truth must be a folder of GeoJSON files: MISSING"),
    (["evaluate", "--truth", "TRUTH", "--strategies", "nosuch"], 2, "error: unknown strategy nosuch; choose from"),
    (["review", "--slide", "nosuch.tiff"], 1, "error: no slide named 'nosuch.tiff' in the catalog"),
    (["retrain", "--encoder", "stain-stats", "--no-progress", "--positive", "Lesion"], 1,
     "error: no slide is labelled 'Lesion'"),
])
def test_every_refusal_is_one_error_line_and_a_code(demo_workspace, demo_cohort, tmp_path, capsys, command, code,
                                                    says):
    words = {"SLIDE": str(demo_cohort / "demo-000.tiff"), "MISSING": str(tmp_path / "missing"),
             "TRUTH": str(demo_cohort)}
    command = [words.get(word, word) for word in command]
    says = says.replace("MISSING", words["MISSING"])
    assert main(["--workspace", str(demo_workspace.root), *command]) == code
    captured = capsys.readouterr()
    assert _one_line_error(captured.err).startswith(says)
    assert captured.out == ""


def test_add_reports_a_missing_input_in_the_same_style_and_ingests_the_rest(tmp_path, demo_cohort, capsys):
    ws = tmp_path / "ws"
    code = main(["--workspace", str(ws), "add", str(tmp_path / "nowhere"), str(demo_cohort / "demo-000.tiff")])
    assert code == 1  # one input was unusable
    assert _one_line_error(capsys.readouterr().err) == f"error: not found: {tmp_path / 'nowhere'}: check the path"
    assert list(_labels(Workspace.resolve(str(ws), None))) == ["demo-000.tiff"]


@pytest.mark.parametrize("command, target", [
    (["demo", "--slides", "1", "--size", "1024x1024"], "wsireview.cli.demo_cmd.generate_cohort"),
    (["evaluate", "--truth", "TRUTH", "--encoder", "stain-stats"], "wsireview.learn.evaluate.evaluate"),
    (["retrain", "--encoder", "stain-stats", "--no-progress"], "wsireview.cli.retrain_cmd.retrain"),
])
def test_a_bug_in_the_domain_keeps_its_traceback(demo_workspace, demo_cohort, monkeypatch, command, target):
    """Only a WsireviewError becomes a message; a ValueError from the domain is a bug and escapes."""
    def broken(*args, **kwargs):
        raise ValueError("a bug, not a user mistake")

    monkeypatch.setattr(target, broken)
    command = [str(demo_cohort) if word == "TRUTH" else word for word in command]
    with pytest.raises(ValueError, match="a bug, not a user mistake"):
        main(["--workspace", str(demo_workspace.root), *command])


def test_retrain_refuses_slides_of_different_patch_grids(demo_workspace, capsys):
    catalog = open_catalog(demo_workspace.db_url)
    with catalog.session() as session:
        slide = session.scalars(select(Slide).order_by(Slide.id)).first()
        slide.patch_size_px = 112
    catalog.close()
    capsys.readouterr()
    code = main(["--workspace", str(demo_workspace.root), "retrain", "--encoder", "stain-stats", "--no-progress"])
    line = _flat(_one_line_error(capsys.readouterr().err))
    assert code == 1
    assert "slides differ in patch resolution (5 at 224 px / 0.5 µm/px, 1 at 112 px / 0.5 µm/px)" in line
    assert "wsireview retile --patch-size PX --mpp UM" in line and "--mixed-grids" in line
    catalog = open_catalog(demo_workspace.db_url)
    with catalog.session() as session:  # refused before any work: no model, no features
        assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0
    catalog.close()


def test_workspace_that_is_a_file_is_one_line(tmp_path, capsys):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("x")
    for command in (["status"], ["add", str(tmp_path)]):
        assert main(["--workspace", str(not_a_folder), *command]) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert f"the workspace {not_a_folder} is a file, not a folder" in line
    assert not_a_folder.read_text() == "x"


def test_catalog_of_an_unknown_schema_revision_is_one_line_for_every_command(demo_workspace, capsys):
    catalog = open_catalog(demo_workspace.db_url)
    with catalog.engine.begin() as connection:  # as a newer wsireview would leave it
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099_future'")
    catalog.close()
    for command in (["status"], ["db", "upgrade"], ["db", "downgrade", "base"]):
        assert main(["--workspace", str(demo_workspace.root), *command]) == 1
        line = _one_line_error(capsys.readouterr().err)
        assert "is at schema revision '0099_future', which this wsireview" in line and "does not know" in line
    catalog = open_catalog(demo_workspace.db_url, migrate=False)  # left as it was: nothing migrated or dropped
    with catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0099_future"
        assert connection.exec_driver_sql("SELECT count(*) FROM slides").scalar() == 6
    catalog.close()


def test_read_only_workspace_is_named_as_such(demo_workspace, capsys):
    """As root (who writes to read-only folders), the command runs in a forked child that has
    become the unprivileged `nobody` first, on a copy of the workspace it can reach."""
    if os.geteuid() == 0:
        code, err = _status_as_nobody(demo_workspace)
    else:
        code, err = _status_read_only(demo_workspace, capsys)
    assert code == 1
    line = _one_line_error(err)
    assert "is read-only (" in line and "cannot be written): make it writable" in line and "unable to open" not in line


def _status_read_only(workspace: Workspace, capsys) -> tuple[int, str]:
    catalog_file = workspace.root / "catalog.sqlite"
    modes = {p: p.stat().st_mode for p in (workspace.root, catalog_file)}
    try:
        for path in modes:
            path.chmod(0o555)
        code = main(["--workspace", str(workspace.root), "status"])
        return code, capsys.readouterr().err
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def _status_as_nobody(workspace: Workspace) -> tuple[int, str]:
    import pwd
    import shutil
    import sys
    import tempfile

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no `nobody` user to run as")
    assert main(["--workspace", str(workspace.root), "status"]) == 0  # every module the child needs, imported
    shared = Path(tempfile.mkdtemp(prefix="wsireview-read-only-"))
    try:
        shared.chmod(0o755)
        copy = shared / "ws"
        shutil.copytree(workspace.root, copy)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nobody from here on, its error line into the pipe
            code = 99
            try:
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                sys.stderr = os.fdopen(write, "w")
                code = main(["--workspace", str(copy), "status"])
                sys.stderr.flush()
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            err = pipe.read()
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), err
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(shared)
