"""Do the reviewers' verdicts make the model better? Learning curves on medium and hard demo cohorts.

    nice -n 10 python benchmarks/learning_curve.py                    # the issue's setting (below)
    nice -n 10 python benchmarks/learning_curve.py --quick            # 12 slides, 2 rounds, 1 seed
    nice -n 10 python benchmarks/learning_curve.py --round0 easy,medium,hard --encoders stain-stats,effnet-lite0

Default: demo cohorts of 24 slides (medium and hard), ``evaluate`` with 4 rounds of 25 verdicts,
strategies mix and random (the baseline, in the same run), seeds 0, 1, 2. Prints per difficulty
a table of mean ± standard deviation over the seeds (slide AUC on the held-out test split and
cross-validated, instance AUC over all patches, lesion patches found), the yield of the queue
per reason, and one check line per target:

- mix finds at least 3x the lesion patches random finds at the last round (100 verdicts);
- test-split slide AUC at the last round is at least its round-0 value and at least random's;
- no round's mean instance AUC (mix) falls more than 0.03 below round 0;
- instance AUC at the last round at least 0.95 on medium (mix);
- before any verdict, instance AUC at most 0.85 on hard (the cohort is hard enough to measure on).

``--round0`` instead prints the round-0 instance and slide AUC per difficulty and encoder.

Cohorts, catalogs and features are cached under ``benchmarks/out/cohorts/`` (git-ignored): each
cohort is generated and embedded once per encoder, so a rerun only trains. Evaluation outputs go
to a new folder under ``benchmarks/out/runs/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsireview.catalog import open_catalog  # noqa: E402
from wsireview.demo import generate_cohort  # noqa: E402
from wsireview.features.embed import embed_slides  # noqa: E402
from wsireview.ingest import add_paths  # noqa: E402
from wsireview.learn.curves import queue_yield, summarise  # noqa: E402
from wsireview.learn.evaluate import evaluate  # noqa: E402
from wsireview.workspace import Workspace  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
COHORT_SEED = 0
LESION_RATIO = 3.0
INSTANCE_DROP = 0.03
MEDIUM_INSTANCE_AUC = 0.95
HARD_ROUND0_MAX = 0.85

err = Console(stderr=True)


def cohort_workspace(difficulty: str, slides: int, encoder: str) -> tuple[Path, Workspace]:
    """The cached cohort (generated once) and its workspace (ingested once, embedded once per encoder)."""
    root = OUT / "cohorts" / f"{difficulty}-{slides}-seed{COHORT_SEED}"
    cohort = root / "cohort"
    manifest = cohort / "truth" / "cohort.json"
    fresh = not manifest.exists()
    if not fresh:
        data = json.loads(manifest.read_text())
        fresh = data.get("difficulty", "easy") != difficulty or len(data["slides"]) != slides
    if fresh:
        err.print(f"generating the {difficulty} cohort of {slides} slides in {cohort}")
        generate_cohort(cohort, n_slides=slides, size="small", seed=COHORT_SEED, difficulty=difficulty)
        if (root / "ws").exists():
            import shutil

            shutil.rmtree(root / "ws")
    ws = Workspace.resolve(root / "ws").ensure()
    catalog = open_catalog(ws.db_url)
    try:
        if fresh or not (ws.root / ".ingested").exists():
            add_paths(catalog, ws, [cohort], labels_csv=cohort / "labels.csv")
            (ws.root / ".ingested").write_text("ok\n")
        t = time.perf_counter()
        report = embed_slides(catalog, ws, encoder=encoder)
        if report.results:
            err.print(f"embedded {len(report.results)} slides of the {difficulty} cohort with {encoder} "
                      f"in {time.perf_counter() - t:.0f} s")
    finally:
        catalog.close()
    return cohort, ws


def run_dir(tag: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = OUT / "runs" / f"{stamp}-{tag}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def run_evaluation(difficulty: str, args, seeds: tuple[int, ...], rounds: int, strategies: tuple[str, ...], encoder: str):
    cohort, ws = cohort_workspace(difficulty, args.slides, encoder)
    catalog = open_catalog(ws.db_url)
    try:
        t = time.perf_counter()
        result = evaluate(catalog, ws, cohort, rounds=rounds, budget=args.budget, strategies=strategies,
                          out_dir=run_dir(f"{difficulty}-{encoder}"), encoder=encoder, seeds=seeds,
                          report=(lambda line: err.print(f"  {difficulty}: {line}")) if args.verbose else None)
        err.print(f"{difficulty}: evaluated in {time.perf_counter() - t:.0f} s -> {result.out_dir}")
    finally:
        catalog.close()
    return result


def curve_table(difficulty: str, result, encoder: str, seeds: tuple[int, ...]) -> Table:
    table = Table(title=f"{difficulty}: {result.truth_lesion_patches} lesion patches of {result.patches}, "
                        f"{encoder}, mean ± sd over seeds {','.join(map(str, seeds))}")
    for col in ("strategy", "round", "verdicts", "slide AUC test", "slide AUC CV", "instance AUC", "lesion found"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for row in summarise(result.points):
        m = row.metrics
        table.add_row(row.strategy, str(row.round), str(row.verdicts), m["test_slide_auc"].format(),
                      m["slide_auc"].format(), m["instance_auc"].format(), m["lesion_found"].format(1))
    return table


def yield_table(difficulty: str, result) -> Table:
    table = Table(title=f"{difficulty}: queue yield per reason (all rounds and seeds)")
    for col in ("strategy", "reason", "queued", "lesion", "yield"):
        table.add_column(col, justify="left" if col in ("strategy", "reason") else "right")
    for strategy, reasons in queue_yield(result.points).items():
        for reason, (queued, lesion) in sorted(reasons.items()):
            table.add_row(strategy, reason, str(queued), str(lesion), f"{100 * lesion / queued:.1f}%" if queued else "-")
    return table


def checks(difficulty: str, result) -> list[tuple[bool | None, str]]:
    """(passed, line) per target; None when a value is missing."""
    rows = {(r.strategy, r.round): r for r in summarise(result.points)}
    last = max(r for _, r in rows)
    mean = lambda s, r, m: rows[(s, r)].metrics[m].mean if (s, r) in rows else None  # noqa: E731
    out: list[tuple[bool | None, str]] = []

    mix, rnd = mean("mix", last, "lesion_found"), mean("random", last, "lesion_found")
    if mix is not None and rnd is not None:
        out.append((mix >= LESION_RATIO * rnd, f"mix finds >= {LESION_RATIO:g}x random's lesion patches at "
                    f"{rows[('mix', last)].verdicts} verdicts: {mix:.1f} vs {rnd:.1f}"))
    t0, tl, tr = mean("mix", 0, "test_slide_auc"), mean("mix", last, "test_slide_auc"), mean("random", last, "test_slide_auc")
    if None not in (t0, tl, tr):
        out.append((tl >= t0 and tl >= tr, f"test-split slide AUC of mix at the last round >= round 0 and >= random's: "
                    f"{tl:.3f} vs {t0:.3f} (round 0), {tr:.3f} (random)"))
    inst = [mean("mix", r, "instance_auc") for r in range(last + 1)]
    if None not in inst:
        worst = min(inst[1:], default=inst[0])
        out.append((worst >= inst[0] - INSTANCE_DROP, f"no round's mean instance AUC (mix) more than {INSTANCE_DROP} "
                    f"below round 0: lowest {worst:.3f} vs {inst[0]:.3f}"))
        if difficulty == "medium":
            out.append((inst[-1] >= MEDIUM_INSTANCE_AUC, f"instance AUC (mix) at the last round >= {MEDIUM_INSTANCE_AUC}: "
                        f"{inst[-1]:.3f}"))
        if difficulty == "hard":
            out.append((inst[0] <= HARD_ROUND0_MAX, f"hard enough: round-0 instance AUC <= {HARD_ROUND0_MAX}: {inst[0]:.3f}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulties", default="medium,hard")
    parser.add_argument("--slides", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--budget", type=int, default=25)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default="mix,random")
    parser.add_argument("--encoder", default="effnet-lite0")
    parser.add_argument("--quick", action="store_true", help="12 slides, 2 rounds, seed 0")
    parser.add_argument("--round0", metavar="DIFFICULTIES", help="only round 0: instance and slide AUC per "
                        "difficulty (comma-separated) and encoder (--encoders)")
    parser.add_argument("--encoders", default="stain-stats,effnet-lite0", help="encoders for --round0")
    parser.add_argument("--verbose", action="store_true", help="a line per round as it finishes")
    args = parser.parse_args()
    if args.quick:
        args.slides, args.rounds, args.seeds = 12, 2, "0"
    seeds = tuple(int(s) for s in args.seeds.split(","))
    console = Console(width=140)

    if args.round0:
        table = Table(title=f"Round 0 (no verdict): {args.slides} slides, mean ± sd over seeds {args.seeds}")
        for col in ("difficulty", "encoder", "lesion patches", "instance AUC", "slide AUC test", "slide AUC CV"):
            table.add_column(col, justify="left" if col in ("difficulty", "encoder") else "right")
        for difficulty in args.round0.split(","):
            for encoder in args.encoders.split(","):
                result = run_evaluation(difficulty, args, seeds, 0, ("random",), encoder)
                m = summarise(result.points)[0].metrics
                table.add_row(difficulty, encoder, f"{result.truth_lesion_patches} of {result.patches}",
                              m["instance_auc"].format(), m["test_slide_auc"].format(), m["slide_auc"].format())
        console.print(table)
        return 0

    strategies = tuple(args.strategies.split(","))
    all_checks: list[tuple[str, bool | None, str]] = []
    for difficulty in args.difficulties.split(","):
        result = run_evaluation(difficulty, args, seeds, args.rounds, strategies, args.encoder)
        console.print(curve_table(difficulty, result, args.encoder, seeds))
        console.print(yield_table(difficulty, result))
        all_checks += [(difficulty, ok, line) for ok, line in checks(difficulty, result)]
    console.print("Targets (issue 10):")
    for difficulty, ok, line in all_checks:
        mark = "PASS" if ok else ("FAIL" if ok is not None else "n/a ")
        console.print(f"  [{mark}] {difficulty}: {line}", markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
