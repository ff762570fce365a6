"""Keypress-to-screen latency of the triage screen (verdicts, zoom and pan), the cost of Kitty and
Sixel images, and start-up time with a big catalog.

    python benchmarks/triage_latency.py [--workspace DIR] [--verdicts 240] [--zoom-steps 120]
                                        [--pace 0.3] [--size 88x28] [--startup-slides 1000]
                                        [--parts verdicts,zoom,encode,startup]

Runs the real `wsireview review` in a detached tmux session (a real terminal: headless Pilot
skips the terminal write) and sends one verdict key at a time, measured two ways in two passes:

- app: the app takes perf_counter in the key's action and again in a call_after_refresh callback
  once the new frame is composed and handed to the terminal writer, and writes the difference to
  $WSIREVIEW_LATENCY_LOG;
- terminal: from just before `tmux send-keys` until `tmux capture-pane` shows the new progress
  count (drawn in the same synchronised frame as the patch), polled as fast as tmux answers. This
  includes the key's way in, the terminal write and tmux's parsing, and the polling itself
  competes for the 2 cores, so it is an upper bound.

Two renderers run on the same queue, in the same run:

- halfblock: the app's widget; the next patches' half-block lines are rendered in a thread worker
  started after the current frame is drawn, so a keypress swaps prepared lines;
- textual-image: the baseline, textual-image's HalfcellImage given the (already read) patch at
  each keypress, converting pixels to cells on the UI thread.

Zoom and pan: a cycle of +, arrows, - and 0 on the patch under review (every key changes the view;
each was prefetched after the frame before it, as a reviewer pausing 0.3 s lets it be), measured in
the app as above and from the terminal's side (until `capture-pane -e` differs: a pan changes only
colours). Kitty and Sixel: tmux speaks neither, so the time to produce the bytes written to the
terminal for each of the same views is measured instead (textual-image's PNG+base64 for Kitty and
its Sixel encoder), at the pixel size of the patch box with 10 x 20 px cells.

Without --workspace, a demo cohort (6 slides) is generated and ingested in a temporary folder.
The queue is inserted directly (seeded scores, no training), so only the UI is measured.
Start-up: `wsireview` on a catalog holding --startup-slides slide rows, until the table shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tui_support import add_slide_rows, make_queue  # noqa: E402
from wsireview.catalog import Review, open_catalog  # noqa: E402
from wsireview.workspace import Workspace  # noqa: E402

WSIREVIEW = str(Path(sys.executable).parent / "wsireview")
console = Console()


def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", *args], check=check, capture_output=True, text=True).stdout


def wait_for(session: str, text: str, timeout: float = 60.0, poll: float = 0.02) -> float:
    """Seconds until ``text`` shows in the pane."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if text in tmux("capture-pane", "-p", "-t", session, check=False):
            return time.perf_counter() - start
        time.sleep(poll)
    raise TimeoutError(f"{text!r} did not appear in {timeout:.0f} s:\n" + tmux("capture-pane", "-p", "-t", session))


def start_app(session: str, ws: Path, size: tuple[int, int], argv: list[str], env: dict[str, str]) -> None:
    tmux("kill-session", "-t", session, check=False)
    env = {"PYTHONPATH": str(ROOT), **env}  # this checkout's code, whatever the tmux server's environment
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    # stderr is left alone: Textual draws on it.
    command = f"env {exports} {WSIREVIEW} --workspace {ws} {' '.join(argv)}; sleep 2"
    tmux("new-session", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]), command)


def demo_workspace(tmp: Path) -> Workspace:
    from wsireview.demo import generate_cohort
    from wsireview.ingest import add_paths

    console.print("Generating and ingesting a 6-slide demo cohort ...")
    cohort = generate_cohort(tmp / "cohort", n_slides=6, size="small", seed=7)
    ws = Workspace.resolve(tmp / "ws").ensure()
    cat = open_catalog(ws.db_url)
    add_paths(cat, ws, [cohort.out_dir], labels_csv=cohort.labels_csv)
    cat.close()
    return ws


def fresh_copy(src: Workspace, dst: Path, per_slide: int) -> Workspace:
    """A copy of the workspace with a new queue and no reviews, so every mode sees the same queue."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src.root, dst, ignore=shutil.ignore_patterns("catalog.sqlite-*"))
    ws = Workspace.resolve(dst)
    cat = open_catalog(ws.db_url)
    with cat.session() as session:
        session.query(Review).delete()
    make_queue(cat, per_slide=per_slide, seed=11)
    cat.close()
    return ws


def terminal_latency(session: str, done: int, total: int, key: str, timeout: float = 5.0) -> float:
    """Seconds from sending ``key`` until the pane shows ``done + 1`` patches reviewed."""
    expected = f"{done + 1}/{total} reviewed"
    start = time.perf_counter()
    tmux("send-keys", "-t", session, key)
    while time.perf_counter() - start < timeout:
        if expected in tmux("capture-pane", "-p", "-t", session, check=False):
            return time.perf_counter() - start
    raise TimeoutError(f"{expected!r} did not appear after {key!r}")


def tmux_floor(session: str, n: int = 50, colours: bool = False) -> list[float]:
    """Milliseconds one `send-keys` (of a key the app ignores) plus one `capture-pane` (with
    ``colours``: `-e`) take: the part of a terminal-side measurement that is the measuring itself."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        tmux("send-keys", "-t", session, "F12")
        tmux("capture-pane", *(["-e"] if colours else []), "-p", "-t", session, check=False)
        out.append(1000 * (time.perf_counter() - start))
        time.sleep(0.05)
    return out


def run_mode(mode: str, ws: Workspace, n: int, pace: float, size: tuple[int, int], out: Path,
             terminal: bool = False) -> dict:
    """One pass of ``n`` verdicts; with ``terminal``, each is timed by polling the pane instead."""
    log = out / f"latency-{mode}.txt"
    log.unlink(missing_ok=True)
    session = f"wsireview-bench-{os.getpid()}"
    start_app(session, ws.root, size, ["review", "--reviewer", "bench"],
              {"WSIREVIEW_GRAPHICS": mode, "WSIREVIEW_LATENCY_LOG": str(log)})
    seen: list[float] = []
    floor: list[float] = []
    try:
        wait_for(session, "Triage")
        time.sleep(2.0)  # first patch read and its read-ahead done
        if terminal:
            floor = tmux_floor(session)
        screen_before = tmux("capture-pane", "-p", "-t", session)
        total = int(screen_before.split(" reviewed")[0].split("/")[-1])
        keys = "ynua"
        for i in range(n):
            if terminal:
                seen.append(1000 * terminal_latency(session, i, total, keys[i % len(keys)]))
            else:
                tmux("send-keys", "-t", session, keys[i % len(keys)])
            time.sleep(pace)
        time.sleep(1.0)
        screen_after = tmux("capture-pane", "-p", "-t", session)
        tmux("send-keys", "-t", session, "q")
        time.sleep(1.0)
    finally:
        tmux("kill-session", "-t", session, check=False)
    times = [float(line) for line in log.read_text().split()] if log.exists() else []
    cat = open_catalog(ws.db_url)
    with cat.session() as s:
        recorded = s.query(Review).filter(Review.reviewer == "bench", Review.undone_at.is_(None)).count()
    cat.close()
    return {"mode": mode, "measured": "terminal" if terminal else "app", "times": seen if terminal else times,
            "floor": floor,
            "recorded": recorded, "before": screen_before, "after": screen_after}


ZOOM_KEYS = ("+", "+", "Right", "Down", "-", "Left", "+", "Up", "0", "-", "-", "0")  # each changes the view


def pane(session: str) -> str:
    return tmux("capture-pane", "-e", "-p", "-t", session, check=False)


def run_zoom(ws: Workspace, n: int, pace: float, size: tuple[int, int], out: Path, terminal: bool = False) -> dict:
    """``n`` zoom and pan keys on the first patch, timed in the app or by polling the pane."""
    log = out / "latency-zoom.txt"
    log.unlink(missing_ok=True)
    session = f"wsireview-zoom-{os.getpid()}"
    start_app(session, ws.root, size, ["review", "--reviewer", "bench"],
              {"WSIREVIEW_GRAPHICS": "halfblock", "WSIREVIEW_LATENCY_LOG": str(log), "COLORTERM": "truecolor"})
    seen: list[float] = []
    floor: list[float] = []
    try:
        wait_for(session, "µm/px")
        time.sleep(2.0)  # the first patch and what one key away shows are prepared
        if terminal:
            floor = tmux_floor(session, colours=True)
        for i in range(n):
            key = ZOOM_KEYS[i % len(ZOOM_KEYS)]
            if terminal:
                before = pane(session)
                start = time.perf_counter()
                tmux("send-keys", "-t", session, key)
                while pane(session) == before:
                    if time.perf_counter() - start > 5:
                        raise TimeoutError(f"the screen did not change after {key!r}")
                seen.append(1000 * (time.perf_counter() - start))
            else:
                tmux("send-keys", "-t", session, key)
            time.sleep(pace)
        time.sleep(1.0)
        screen_after = tmux("capture-pane", "-p", "-t", session)
        tmux("send-keys", "-t", session, "q")
        time.sleep(1.0)
    finally:
        tmux("kill-session", "-t", session, check=False)
    times = [float(line) for line in log.read_text().split()] if log.exists() else []
    return {"mode": "halfblock", "measured": "terminal" if terminal else "app",
            "times": seen if terminal else times, "floor": floor, "after": screen_after}


def encode_times(ws: Workspace, cells: tuple[int, int], cell_px: tuple[int, int] = (10, 20),
                 patches: int = 6) -> dict[str, dict]:
    """Milliseconds and bytes to turn each zoom/pan view of a few patches into what Kitty and
    Sixel terminals are sent, at the pixel size of a ``cells`` box."""
    from textual_image._pixeldata import PixelData
    from textual_image._sixel import image_to_sixels

    from wsireview.catalog.queries import queue_entries
    from wsireview.tui.patch_source import PatchSource
    from wsireview.tui.viewport import home_view, neighbours, zoom_ladder, Viewport

    box = (cells[0] * cell_px[0], cells[1] * cell_px[1])
    cat = open_catalog(ws.db_url)
    entries = queue_entries(cat)[:patches]
    cat.close()
    source = PatchSource(ws)
    images = []
    for entry in entries:
        home = home_view(entry.x, entry.y, entry.size, box)
        views = [Viewport(home.cx, home.cy, ds) for ds in zoom_ladder(home.downsample)]
        views += neighbours(views[0], home.downsample, box, (entry.slide_width or 0, entry.slide_height or 0))
        images += [source.view(entry, v, box) for v in views]
    source.close()
    out: dict[str, dict] = {}
    for name, encode in (("kitty", lambda im: PixelData(im).scaled(*im.size).to_base64()),
                         ("sixel", lambda im: image_to_sixels(im))):
        times, sizes = [], []
        for image in images:
            start = time.perf_counter()
            data = encode(image)
            times.append(1000 * (time.perf_counter() - start))
            sizes.append(len(data))
        out[name] = {"times": times, "kb": statistics.median(sizes) / 1024, "px": box}
    return out


# The app alone, without the `wsireview` command's parser (which imports every subcommand).
APP_ONLY = (
    "import sys; from wsireview.catalog import open_catalog; from wsireview.workspace import Workspace; "
    "from wsireview.tui.app import ReviewApp; ws = Workspace.resolve(sys.argv[1]); "
    "ReviewApp(ws, open_catalog(ws.db_url), reviewer='bench').run()"
)


def startup(src: Workspace, dst: Path, n_slides: int, size: tuple[int, int], repeats: int = 3) -> dict[str, list[float]]:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src.root, dst, ignore=shutil.ignore_patterns("catalog.sqlite-*"))
    ws = Workspace.resolve(dst)
    cat = open_catalog(ws.db_url)
    add_slide_rows(cat, n_slides - 6, patches_each=20)
    make_queue(cat, per_slide=2, seed=3)
    cat.close()
    session = f"wsireview-start-{os.getpid()}"
    out: dict[str, list[float]] = {"wsireview command": [], "app only": []}
    for _ in range(repeats):
        for kind in out:
            start = time.perf_counter()
            if kind == "app only":
                tmux("kill-session", "-t", session, check=False)
                tmux("new-session", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]),
                     f'{sys.executable} -c "{APP_ONLY}" {ws.root}; sleep 2')
            else:
                start_app(session, ws.root, size, [], {})
            wait_for(session, f"{n_slides} slides", poll=0.01)  # the title is drawn with the table
            out[kind].append(time.perf_counter() - start)
            tmux("send-keys", "-t", session, "q")
            time.sleep(0.5)
            tmux("kill-session", "-t", session, check=False)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", help="an ingested workspace to copy (default: generate the demo cohort)")
    parser.add_argument("--verdicts", type=int, default=240)
    parser.add_argument("--pace", type=float, default=0.3, help="seconds between keys (default 0.3)")
    parser.add_argument("--size", default="88x28", help="terminal size; 88x28 gives a 53 x 25 cell patch box")
    parser.add_argument("--startup-slides", type=int, default=1000)
    parser.add_argument("--modes", default="halfblock,textual-image")
    parser.add_argument("--zoom-steps", type=int, default=120, help="zoom and pan keys timed per pass (default 120)")
    parser.add_argument("--parts", default="verdicts,zoom,encode,startup",
                        help="what to measure (default: verdicts,zoom,encode,startup)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not shutil.which("tmux"):
        console.print("[red]tmux is needed[/] to run the app in a real terminal.")
        return 2
    size = tuple(int(v) for v in args.size.split("x"))
    results, zooms, encoded, starts = [], [], {}, {}
    with tempfile.TemporaryDirectory(prefix="wsireview-bench-") as tmp_name:
        tmp = Path(tmp_name)
        src = Workspace.resolve(args.workspace) if args.workspace else demo_workspace(tmp)
        per_slide = -(-args.verdicts // 6) + 2
        for terminal in (False, True) if "verdicts" in parts else ():
            for mode in [m for m in args.modes.split(",") if m]:
                ws = fresh_copy(src, tmp / f"ws-{mode}", per_slide)
                how = "polling the pane" if terminal else "in the app"
                console.print(f"[b]{mode}[/b], {how}: {args.verdicts} verdicts at {args.pace:.2f} s a key, terminal {args.size} ...")
                results.append(run_mode(mode, ws, args.verdicts, args.pace, size, tmp, terminal=terminal))
                t = results[-1]["times"]
                if t:
                    console.print(f"  {len(t)} timed, p50 {statistics.median(t):.1f} ms, p95 {pct(t, 0.95):.1f} ms")
        for terminal in (False, True) if "zoom" in parts else ():
            ws = fresh_copy(src, tmp / "ws-zoom", 2)
            how = "polling the pane" if terminal else "in the app"
            console.print(f"[b]zoom and pan[/b], {how}: {args.zoom_steps} keys at {args.pace:.2f} s a key ...")
            zooms.append(run_zoom(ws, args.zoom_steps, args.pace, size, tmp, terminal=terminal))
        if "encode" in parts:
            ws = fresh_copy(src, tmp / "ws-encode", 2)
            cells = (size[0] - 35, size[1] - 3)  # the patch box: the side panel, title, caption and footer taken
            console.print(f"Kitty and Sixel bytes for the zoom and pan views of 6 patches, {cells[0]} x {cells[1]} cells ...")
            encoded = encode_times(ws, cells)
        if "startup" in parts:
            console.print(f"Start-up with {args.startup_slides} slides ...")
            starts = startup(src, tmp / "ws-startup", args.startup_slides, size)

    if results:
        table = Table(title=f"Keypress to new patch on screen (tmux {args.size}, one key every {args.pace:.2f} s)")
        for col in ("renderer", "measured", "verdicts recorded", "timed", "p50 ms", "p95 ms", "max ms"):
            table.add_column(col, justify="left" if col in ("renderer", "measured") else "right")
        for r in results:
            t = r["times"]
            if not t:
                table.add_row(r["mode"], r["measured"], str(r["recorded"]), "0", "-", "-", "-")
                continue
            table.add_row(r["mode"], r["measured"], str(r["recorded"]), str(len(t)), f"{statistics.median(t):.1f}",
                          f"{pct(t, 0.95):.1f}", f"{max(t):.1f}")
        console.print(table)
    if zooms or encoded:
        table = Table(title=f"Zoom and pan step to screen (prefetched; tmux {args.size}, one key every {args.pace:.2f} s; "
                            "target p95 < 50 ms)")
        for col in ("renderer", "measured", "timed", "p50 ms", "p95 ms", "max ms"):
            table.add_column(col, justify="left" if col in ("renderer", "measured") else "right")
        for r in zooms:
            t = r["times"]
            table.add_row(r["mode"], r["measured"], str(len(t)), *(f"{v:.1f}" for v in (
                statistics.median(t), pct(t, 0.95), max(t))) if t else ("-", "-", "-"))
        for name, e in encoded.items():
            t = e["times"]
            table.add_row(name, f"bytes produced ({e['px'][0]} x {e['px'][1]} px, {e['kb']:.0f} KB)", str(len(t)),
                          f"{statistics.median(t):.1f}", f"{pct(t, 0.95):.1f}", f"{max(t):.1f}")
        console.print(table)
    for rows, what in ((results, "capture-pane"), (zooms, "capture-pane -e")):
        floors = [v for r in rows for v in r["floor"]]
        if floors:
            console.print(f"Measuring floor of the terminal rows above (one send-keys + one {what}, nothing redrawn): "
                          f"p50 {statistics.median(floors):.1f} ms, p95 {pct(floors, 0.95):.1f} ms")
    for kind, values in starts.items():
        console.print(f"Start-up to the slides table with {args.startup_slides} slides, {kind}: "
                      + ", ".join(f"{v:.2f} s" for v in values) + f" (median {statistics.median(values):.2f} s)")
    last = (results or zooms)[-1:]
    if last:
        console.print(f"\nLast screen of the {last[0]['mode']} {last[0]['measured']} run:")
        print(last[0]["after"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
