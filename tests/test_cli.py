"""The command line's own rules (the subcommands are tested with their issues)."""

from __future__ import annotations

import pytest

from wsireview.cli import SUBCOMMANDS, build_parser, main


def test_abbreviated_global_option_is_an_error_not_the_app(tmp_path, capsys):
    # `--work DIR status` once parsed as --workspace, hid `status` from the subcommand scan and
    # opened the app instead; now it is refused with argparse's usage error.
    with pytest.raises(SystemExit) as stop:
        main(["--work", str(tmp_path), "status"])
    assert stop.value.code == 2
    assert "error" in capsys.readouterr().err
    # Spelled out, it reaches `status`, which refuses a workspace with no catalog (never the app).
    assert main(["--workspace", str(tmp_path), "status"]) == 1
    assert "no catalog at" in capsys.readouterr().err


def test_one_help_line_per_subcommand_for_both_parsers():
    full = build_parser()
    light = build_parser(["status"])
    for parser in (full, light):
        actions = next(a for a in parser._actions if a.dest == "command")
        assert {c.dest: c.help for c in actions._choices_actions} == SUBCOMMANDS


def test_retrain_change_column_never_prints_minus_zero():
    from wsireview.cli.retrain_cmd import _change

    assert _change(0.5, 0.50001) == "[dim]+0.000[/]"
    assert _change(0.4, 0.5) == "[red]-0.100[/]" and _change(0.6, 0.5) == "[green]+0.100[/]"
    assert _change(None, 0.5) == ""


def test_retrain_says_why_there_was_no_cross_validation():
    from wsireview.cli.retrain_cmd import _cv_words

    assert _cv_words(3) == "3-fold cross-validation"
    assert _cv_words(0) == "no cross-validation (it needs 2 labelled slides of each class)"
