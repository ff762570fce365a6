"""Ingest time per slide, against the floor of reading the thumbnail alone (same run); then the
whole batch read in isolated worker processes (1 and 2, the default) against in-process reading
(``--workers 0``, no isolation: the baseline), each into a fresh workspace.

Usage: python benchmarks/ingest_time.py [--batch-only] [--rounds N] [SLIDE_OR_FOLDER ...]
Default: the real test slides in tests/data/slides. The batch runs take turns (in process, 1, 2,
in process, ...) ``--rounds`` times (3), so load from other work falls on each alike; the table
gives the median and the machine's load average around the runs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wsireview.catalog import open_catalog
from wsireview.ingest import THUMBNAIL_SIDE, add_paths, discover, ingest_file
from wsireview.slides import SlideFile, SlideError
from wsireview.slides.isolated import ReaderLimits
from wsireview.workspace import Workspace

PROJECT = Path(__file__).resolve().parent.parent
IN_PROCESS = ReaderLimits(workers=0)  # per slide: the work itself, without a worker's start-up


def main(argv: list[str]) -> None:
    batch_only = "--batch-only" in argv
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    args = [a for i, a in enumerate(argv) if a != "--batch-only" and a != "--rounds"
            and not (i > 0 and argv[i - 1] == "--rounds")]
    paths = [Path(a) for a in args] or [PROJECT / "tests" / "data" / "slides"]
    files = discover(paths, recursive=True)
    console = Console()
    if batch_only:
        tmp_root = Path(tempfile.mkdtemp())
        console.print(batch_table(files, tmp_root, rounds))
        import shutil

        shutil.rmtree(tmp_root, ignore_errors=True)
        return
    table = Table(title="Ingest time per slide (baseline: OpenSlide thumbnail read alone)")
    for col in ("slide", "size", "thumbnail (s)", "ingest (s)", "overhead", "patches", "tissue", "outcome"):
        table.add_column(col, justify="left" if col in ("slide", "outcome") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp).ensure()
        catalog = open_catalog(ws.db_url)
        # Warm imports and the first OpenSlide open so the first row is not penalised.
        ingest_file(catalog, ws, files[0], limits=IN_PROCESS)
        catalog.close()
        ws = Workspace.resolve(Path(tmp) / "run").ensure()
        catalog = open_catalog(ws.db_url)
        for path in files:
            try:
                t0 = time.perf_counter()
                with SlideFile(path) as slide:
                    slide.thumbnail(THUMBNAIL_SIDE)
                    size = f"{slide.dimensions[0]} x {slide.dimensions[1]}"
                thumb_s = time.perf_counter() - t0
            except SlideError:
                thumb_s, size = float("nan"), "-"
            result = ingest_file(catalog, ws, path, limits=IN_PROCESS)
            overhead = f"{result.seconds / thumb_s:.1f}x" if thumb_s == thumb_s and thumb_s > 0 else "-"
            table.add_row(path.name, size, f"{thumb_s:.3f}", f"{result.seconds:.3f}", overhead, str(result.patches),
                          "" if result.tissue_fraction is None else f"{result.tissue_fraction:.2%}", result.outcome)
        catalog.close()
    console.print(table)
    console.print(batch_table(files, Path(tmp_root := tempfile.mkdtemp()), rounds))
    import shutil

    shutil.rmtree(tmp_root, ignore_errors=True)


def batch_table(files: list[Path], tmp: Path, rounds: int = 3) -> Table:
    """The batch in process (baseline) and in 1 and 2 isolated workers, taking turns ``rounds`` times."""
    import os
    import statistics

    setups = (0, 1, 2)
    seconds: dict[int, list[float]] = {w: [] for w in setups}
    cpu: dict[int, list[float]] = {w: [] for w in setups}  # this process and its (finished) workers
    counts: dict[int, tuple[int, int]] = {}
    load_before = os.getloadavg()[0]
    for round_ in range(rounds):
        for workers in setups:
            ws = Workspace.resolve(tmp / f"workers-{workers}-{round_}").ensure()
            catalog = open_catalog(ws.db_url)
            t0, cpu0 = time.perf_counter(), _cpu_seconds()
            report = add_paths(catalog, ws, files, limits=ReaderLimits(workers=workers))
            seconds[workers].append(time.perf_counter() - t0)
            cpu[workers].append(_cpu_seconds() - cpu0)
            catalog.close()
            counts[workers] = (report.count("added"), report.failed)
    load_after = os.getloadavg()[0]
    table = Table(title=f"Batch ingest of {len(files)} files, median of {rounds} turns (baseline: in process, "
                        f"no isolation); load average {load_before:.1f} before, {load_after:.1f} after, "
                        f"{os.cpu_count()} cores")
    for col in ("readers", "median s", "all runs s", "vs baseline", "CPU s", "added", "failed"):
        table.add_column(col, justify="left" if col == "readers" else "right")
    baseline = statistics.median(seconds[0])
    for workers in setups:
        median = statistics.median(seconds[workers])
        label = "in process (baseline)" if workers == 0 else f"{workers} isolated worker{'s' if workers > 1 else ''}"
        table.add_row(label, f"{median:.2f}", " ".join(f"{s:.1f}" for s in seconds[workers]),
                      f"{median / baseline:.2f}x", f"{statistics.median(cpu[workers]):.1f}",
                      str(counts[workers][0]), str(counts[workers][1]))
    return table


def _cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that have ended (the workers,
    once their pool is closed): the work done, whatever the machine's load."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main(sys.argv[1:])
