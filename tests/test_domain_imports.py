"""The domain never imports a UI (Textual, the web viewer, the CLI): every module of the domain packages,
imported in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

DOMAIN = ["wsireview.catalog", "wsireview.slides", "wsireview.features", "wsireview.learn", "wsireview.export",
          "wsireview.demo", "wsireview.ingest", "wsireview.status", "wsireview.workspace", "wsireview.leftovers",
          "wsireview.progress"]

PROBE = r"""
import importlib, json, pkgutil, sys
names = json.loads(sys.argv[1])
imported = []
for name in names:
    module = importlib.import_module(name)
    imported.append(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=name + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "textual_image", "starlette", "uvicorn")
            or m.startswith(("wsireview.tui", "wsireview.serve", "wsireview.cli")))
print(json.dumps({"imported": imported, "ui": ui}))
"""


def test_domain_packages_never_import_textual():
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(DOMAIN)], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "wsireview.catalog.queries" in result["imported"]  # the UI's read queries are domain code too
    assert len(result["imported"]) > len(DOMAIN)
    assert result["ui"] == []


def test_probe_detects_the_web_viewer():
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["wsireview.serve.app"])], capture_output=True, text=True,
        check=True, timeout=120,
    )
    ui = json.loads(out.stdout.strip().splitlines()[-1])["ui"]
    assert "starlette" in ui and "wsireview.serve.app" in ui


def test_probe_detects_textual():
    """The check can fail: importing the app pulls Textual in."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["wsireview.tui.app"])], capture_output=True, text=True, check=True,
        timeout=120,
    )
    assert "textual" in json.loads(out.stdout.strip().splitlines()[-1])["ui"]


def test_embedding_and_export_draw_no_bars():
    """They report through ``on_progress``; drawing is the command line's or the app's (Rich, Textual)."""
    probe = ("import sys, wsireview.features.embed, wsireview.export, wsireview.leftovers; "
             "print(sorted(m for m in sys.modules if m.startswith(('rich', 'textual'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
