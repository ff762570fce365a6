"""Deep Zoom tile throughput and latency of `wsireview serve`, against OpenSlide's own
`deepzoom_multiserver.py` on the same slides in the same run.

Each server starts fresh (cold caches) as its own process on loopback; a bounded Python keep-alive
client fetches every tile of the 4 highest Deep Zoom levels of each slide twice (a cold pass, then
a warm pass) with 1 and with 16 concurrent connections; the servers take turns, 3 runs each, and
the median run is shown, with the CPU seconds each server spent per tile (its process and worker
processes: what decides throughput when other work shares the cores) and the machine's load average.
Our tile cache in the workspace is emptied before every run, so both servers start cold. The last
line is the ceiling for cold tiles here: the library's get_tile and JPEG encoding alone, in this
process on 16 threads (as many as the clients: on a shared machine a process's CPU share grows with
its runnable threads), over the same tile list. The baseline script comes from the
openslide-python source distribution on PyPI (`pip download --no-binary :all: --no-deps
openslide-python`, into benchmarks/out/serve_tiles/, not committed) and needs Flask
(`pip install flask`).

Usage: python benchmarks/serve_tiles.py [SLIDE ...]
Default: the real Aperio slide of tests/data/slides (cmu-1-small-region.svs) and one generated demo
slide (pyramidal TIFF, 4480 x 3360). The baseline serves only files OpenSlide itself recognises, so
plain images (which `wsireview serve` also serves) are left out of the comparison.
Targets: at least 2x the baseline's tiles/s with 16 clients, at least 1x with 1, p95 < 30 ms warm.
"""

from __future__ import annotations

import http.client
import io
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import openslide
from openslide.deepzoom import DeepZoomGenerator
from rich.console import Console
from rich.table import Table

PROJECT = Path(__file__).resolve().parent.parent
WORK = PROJECT / "benchmarks" / "out" / "serve_tiles"
REAL_SLIDE = PROJECT / "tests" / "data" / "slides" / "cmu-1-small-region.svs"
LEVELS = 4  # the highest Deep Zoom levels: what a reviewer zoomed in on fetches
CLIENTS = (1, 16)
REPEATS = 3  # servers take turns, 3 runs each; the median run is reported (a shared machine's load drifts)
WARM_P95_TARGET_MS = 30.0
BASELINE = "deepzoom_multiserver.py -Q 100"
OURS = "wsireview serve (quality 90, 1 worker)"  # the command's default on this machine: the targets' row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_baseline(work: Path) -> Path:
    """deepzoom_multiserver.py from the openslide-python sdist (downloaded once into ``work``)."""
    script = work / "deepzoom" / "deepzoom_multiserver.py"
    if script.exists():
        return script
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
                    "-d", str(work), "openslide-python"], check=True)
    sdist = next(work.glob("openslide_python-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/examples/deepzoom/" in m.name]
        tar.extractall(work, members=members, filter="data")
    shutil.move(str(next(work.glob("openslide_python-*/examples/deepzoom"))), str(work / "deepzoom"))
    return script


def demo_slide(folder: Path) -> Path:
    """One generated demo slide (the same pixels every run)."""
    from wsireview.demo import generate_cohort

    path = folder / "demo-000.tiff"
    if not path.exists():
        generate_cohort(folder, n_slides=1, size="small", seed=0)
    return path


def tile_paths(slide: Path, prefix: str, limit_bounds: bool) -> list[str]:
    """Every tile of the highest ``LEVELS`` Deep Zoom levels, as URL paths under ``prefix``."""
    with openslide.open_slide(str(slide)) as osr:
        dz = DeepZoomGenerator(osr, 254, 1, limit_bounds=limit_bounds)
        out = []
        for level in range(max(0, dz.level_count - LEVELS), dz.level_count):
            cols, rows = dz.level_tiles[level]
            out += [f"{prefix}_files/{level}/{c}_{r}.jpeg" for r in range(rows) for c in range(cols)]
    return out


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += tree_cpu_seconds(int(child))
    except (OSError, IndexError, ValueError):  # a process that ended meanwhile
        pass
    return total


@dataclass
class Pass:
    seconds: float
    latencies_ms: list[float]
    failures: int
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


def run_pass(port: int, paths: list[str], clients: int) -> Pass:
    """Fetch every path once with ``clients`` keep-alive connections; bounded by the list itself."""
    counter = itertools.count()
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while (i := next(counter)) < len(paths):
            t0 = time.perf_counter()
            try:
                conn.request("GET", paths[i])
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and body[:2] == b"\xff\xd8"
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failures[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Pass(time.perf_counter() - t0, latencies, failures[0])


def start(cmd: list[str], port: int, ready_path: str, log: Path) -> subprocess.Popen:
    """A server process, its output in ``log`` (a pipe nobody reads would fill and stall a server that
    logs every request)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[1]} exited: {log.read_text()[-500:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", ready_path)
            conn.getresponse().read()
            conn.close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def measured_pass(proc: subprocess.Popen, port: int, paths: list[str], clients: int) -> Pass:
    before = tree_cpu_seconds(proc.pid)
    result = run_pass(port, paths, clients)
    result.cpu_seconds = tree_cpu_seconds(proc.pid) - before
    return result


def render_ceiling(slides: list[Path], quality: int = 90, threads: int = max(CLIENTS)) -> float:
    """Tiles/s of DeepZoomGenerator.get_tile + JPEG encoding alone (no HTTP, no cache) over the
    benchmark's tiles: what no server can beat for cold tiles on this machine now."""
    jobs = []
    for slide in slides:
        osr = openslide.open_slide(str(slide))
        osr.set_cache(openslide.OpenSlideCache(256 << 20))
        dz = DeepZoomGenerator(osr, 254, 1, limit_bounds=False)
        jobs += [(dz, level, (c, r)) for level in range(max(0, dz.level_count - LEVELS), dz.level_count)
                 for r in range(dz.level_tiles[level][1]) for c in range(dz.level_tiles[level][0])]

    def one(job) -> None:
        dz, level, address = job
        dz.get_tile(level, address).save(io.BytesIO(), "JPEG", quality=quality)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, jobs))
    return len(jobs) / (time.perf_counter() - t0)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else float("nan")


def main(argv: list[str]) -> None:
    from sqlalchemy import select

    from wsireview.catalog import Slide, open_catalog
    from wsireview.ingest import add_paths
    from wsireview.workspace import Workspace

    console = Console(width=max(Console().width, 180))  # the table stays readable in a log
    try:
        import flask  # noqa: F401
    except ImportError:
        console.print("The baseline needs Flask: pip install flask")
        raise SystemExit(2) from None
    WORK.mkdir(parents=True, exist_ok=True)
    slides = [Path(a).resolve() for a in argv] or [REAL_SLIDE, demo_slide(WORK / "demo")]
    skipped = [s.name for s in slides if openslide.OpenSlide.detect_format(str(s)) is None]
    if skipped:
        console.print(f"left out (the baseline cannot open plain images): {', '.join(skipped)}")
    slides = [s for s in slides if s.name not in skipped]
    baseline = fetch_baseline(WORK)
    folder = WORK / "slides"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for slide in slides:
        shutil.copy(slide, folder / slide.name)
    ws = Workspace.resolve(WORK / "workspace")
    shutil.rmtree(ws.root, ignore_errors=True)
    ws.ensure()
    catalog = open_catalog(ws.db_url)
    add_paths(catalog, ws, [folder])
    with catalog.session() as session:
        ids = {name: sid for sid, name in session.execute(select(Slide.id, Slide.name)).all()}
    catalog.close()

    ours_paths = [p for s in slides for p in tile_paths(folder / s.name, f"/dz/{ids[s.name]}", limit_bounds=False)]
    base_paths = [p for s in slides for p in tile_paths(folder / s.name, f"/{s.name}", limit_bounds=True)]
    def ours_command(workers: int):
        return (lambda port: [sys.executable, "-m", "wsireview", "--workspace", str(ws.root), "serve", "--port",
                              str(port), "--reviewer", "bench", "--workers", str(workers)], ours_paths, "/api/session")

    servers = {
        BASELINE: (
            lambda port: [sys.executable, str(baseline), "-Q", "100", "-p", str(port), str(folder)], base_paths, "/"),
        "deepzoom_multiserver.py -Q 90": (
            lambda port: [sys.executable, str(baseline), "-Q", "90", "-p", str(port), str(folder)], base_paths, "/"),
        OURS: ours_command(1),
        "wsireview serve (quality 90, 2 workers)": ours_command(2),
    }
    console.print(f"{len(ours_paths)} tiles ({LEVELS} highest levels of {', '.join(s.name for s in slides)}), "
                  "each fetched twice (cold, then warm) per run; every server starts fresh per run.")
    console.print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    runs: dict[tuple[str, int], list[tuple[Pass, Pass]]] = {}
    for _ in range(REPEATS):
        for clients in CLIENTS:
            for name, (command, paths, ready) in servers.items():
                port = free_port()
                shutil.rmtree(ws.root / "tile-cache", ignore_errors=True)  # our disk cache: cold like the baseline
                proc = start(command(port), port, ready, WORK / "server.log")
                try:
                    cold = measured_pass(proc, port, paths, clients)
                    warm = measured_pass(proc, port, paths, clients)
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
                runs.setdefault((name, clients), []).append((cold, warm))
    results = {key: sorted(passes, key=lambda p: p[0].seconds + p[1].seconds)[len(passes) // 2]
               for key, passes in runs.items()}

    def total_rate(key):
        cold, warm = results[key]
        return (len(cold.latencies_ms) + len(warm.latencies_ms)) / (cold.seconds + warm.seconds)

    table = Table(title=f"Deep Zoom tiles on loopback, Python keep-alive client, median of {REPEATS} runs "
                        "(baseline: deepzoom_multiserver.py -Q 100)")
    for col in ("server", "clients", "tiles/s", "vs baseline", "cold tiles/s", "warm tiles/s", "p50 ms",
                "p95 ms", "p95 warm ms", "CPU ms/tile", "failed"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for clients in CLIENTS:
        base_rate = total_rate((BASELINE, clients))
        for name in servers:
            cold, warm = results[(name, clients)]
            both = cold.latencies_ms + warm.latencies_ms
            rate = len(both) / (cold.seconds + warm.seconds)
            table.add_row(name, str(clients), f"{rate:.0f}", f"{rate / base_rate:.2f}x", f"{cold.rate:.0f}",
                          f"{warm.rate:.0f}", f"{statistics.median(both):.1f}", f"{p95(both):.1f}",
                          f"{p95(warm.latencies_ms):.1f}", f"{(cold.cpu_seconds + warm.cpu_seconds) / len(both) * 1000:.2f}",
                          str(cold.failures + warm.failures))
    console.print(table)
    ceiling = render_ceiling([folder / s.name for s in slides])
    console.print(f"ceiling for cold tiles now: get_tile + JPEG q90 alone, {max(CLIENTS)} threads in one process: "
                  f"{ceiling:.0f} tiles/s (each baseline run renders every tile twice; ours once)")
    console.print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ours, base = OURS, BASELINE

    ratio16 = total_rate((ours, 16)) / total_rate((base, 16))
    ratio1 = total_rate((ours, 1)) / total_rate((base, 1))
    warm_p95 = max(p95(results[(ours, c)][1].latencies_ms) for c in CLIENTS)
    console.print(f"targets: 16 clients {ratio16:.2f}x (>= 2x) {'met' if ratio16 >= 2 else 'NOT met'}; "
                  f"1 client {ratio1:.2f}x (>= 1x) {'met' if ratio1 >= 1 else 'NOT met'}; "
                  f"warm p95 {warm_p95:.1f} ms (< {WARM_P95_TARGET_MS:.0f}) "
                  f"{'met' if warm_p95 < WARM_P95_TARGET_MS else 'NOT met'}")


if __name__ == "__main__":
    main(sys.argv[1:])
