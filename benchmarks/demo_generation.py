"""Time the demo generator: seconds per slide for small slides and for one large slide.

    python benchmarks/demo_generation.py [--small N] [--large-size 40000x30000] [--skip-large] [--workers W]

Prints a table: size, slides, workers, seconds per slide, megapixels per second, file size, peak
memory of the writing process (the large slide is streamed, so this stays far below one level).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsireview.demo import generate_cohort, parse_size  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(label: str, out: Path, n: int, size: str, workers: int) -> list[str]:
    width, height = parse_size(size)
    start = time.perf_counter()
    cohort = generate_cohort(out, n_slides=n, size=size, seed=0, workers=workers)
    total = time.perf_counter() - start
    per_slide = total / n
    mpx = width * height / 1e6
    file_mb = sum(p.stat().st_size for p in cohort.paths) / n / 1e6
    return [label, f"{width}x{height}", str(n), str(workers), f"{per_slide:.1f}", f"{total:.1f}",
            f"{mpx * n / total:.1f}", f"{file_mb:.1f}", f"{peak_rss_mb():.0f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=12, help="small slides to generate (default 12)")
    parser.add_argument("--large-size", default="large", help="size of the large slide (default: large)")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    workers = args.workers or __import__("os").cpu_count() or 1

    table = Table(title="Demo slide generation")
    for col in ("run", "size", "slides", "workers", "s / slide", "total s", "Mpx / s", "MB / slide", "peak RSS MB"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp:
        table.add_row(*run("small, 1 process", Path(tmp) / "s1", 2, "small", 1))
        table.add_row(*run("small cohort", Path(tmp) / "s", args.small, "small", workers))
        if not args.skip_large:
            table.add_row(*run("large", Path(tmp) / "l", 1, args.large_size, workers))
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
