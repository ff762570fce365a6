"""A team under load: simulated reviewers in separate processes on one catalog, SQLite and PostgreSQL.

Each reviewer (its own process, multiprocessing spawn) records verdicts as fast as it can through
the same domain functions the apps call: ``claim_patches`` (top up its claims, renew them),
``record_verdict`` for each claimed patch, now and then ``undo_review`` and a fresh verdict on the
same patch, and ``release_claims`` when done. Half-way through, a real retrain (``learn.round.retrain``
in a process of its own) trains on the verdicts so far and writes a new model version with its scores
and queue; each reviewer notices it when it next tops up, releases what it held and moves to the new
queue, as the app offers.

Reported per database: verdicts per second (all reviewers together), p50/p95/p99 commit latency of
``record_verdict`` (the baseline beside it: the same reviewer alone on the catalog, measured in the
same run), and the claim and undo latencies. Checked after the run:

- every verdict a process was told was stored is in the catalog exactly once (its id, reviewer,
  patch and verdict), and no review row exists that no process was told about;
- undone verdicts are marked undone and no others;
- no patch was held by two reviewers at once: each process logs when its claim calls returned and
  when it released or judged; two reviewers' certain holding intervals on one patch never overlap,
  and no patch has standing verdicts from two reviewers;
- no process saw an error.

The PostgreSQL server is a throw-away cluster started like the tests' (``tests/pg_server.py``).

    python benchmarks/reviewers.py [--reviewers 8] [--verdicts 500] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from wsireview.catalog import Review, open_catalog
from wsireview.catalog.claims import ClaimPolicy, claim_patches, release_claims
from wsireview.catalog.queries import latest_model_version_id
from wsireview.learn.reviews import record_verdict, undo_review
from wsireview.workspace import Workspace

ENCODER = "synthetic"
UNDO_EVERY = 25  # every 25th verdict is undone and given again
VERDICT_CHOICES = ("lesion", "not_lesion", "not_lesion", "unsure")
POLICY = ClaimPolicy(batch=5, lease_seconds=600)  # no lease expires during a run: holds are exact


def spec(budget: int, seed: int):
    from wsireview.learn.spec import RoundSpec
    from wsireview.learn.train import TrainParams

    return RoundSpec(encoder=ENCODER, budget=budget, strategy="attention", seed=seed, epochs=5,
                     train=TrainParams(folds=2, threads=1))


# -- one reviewer, in its own process ------------------------------------------------------------

@dataclass
class ReviewerLog:
    name: str
    stored: list[tuple[int, int, str]] = field(default_factory=list)  # (review id, patch id, verdict) told stored
    undone: list[int] = field(default_factory=list)
    commit_ms: list[float] = field(default_factory=list)
    claim_ms: list[float] = field(default_factory=list)
    undo_ms: list[float] = field(default_factory=list)
    holds: list[tuple[int, float, float]] = field(default_factory=list)  # (patch, certainly held from, to)
    versions: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0


def review(url: str, name: str, verdicts: int, seed: int, ready, go) -> ReviewerLog:
    """Record ``verdicts`` verdicts as fast as possible; log everything the checks need."""
    log = ReviewerLog(name)
    rng = np.random.default_rng(seed)
    catalog = open_catalog(url, migrate=False)
    held_since: dict[int, float] = {}  # patch -> when a claim call that returned it ended

    def let_go(patch_ids, until: float) -> None:
        for pid in list(patch_ids):
            if pid in held_since:
                log.holds.append((pid, held_since.pop(pid), until))

    try:
        latest_model_version_id(catalog)  # connected
        ready.put(name)
        go.wait()
        log.started = time.time()
        version = latest_model_version_id(catalog)
        log.versions.append(version)
        while len(log.stored) - len(log.undone) < verdicts:
            latest = latest_model_version_id(catalog)
            if latest != version:  # a retrain finished: move to its queue, as the app offers
                let_go(held_since, time.time())
                release_claims(catalog, name)
                version = latest
                log.versions.append(version)
            t = time.perf_counter()
            claimed = claim_patches(catalog, name, version, policy=POLICY)
            log.claim_ms.append((time.perf_counter() - t) * 1000)
            now = time.time()
            for pid in claimed:
                held_since.setdefault(pid, now)
            if not claimed:
                if latest_model_version_id(catalog) == version:
                    log.errors.append(f"{name}: the queue of version {version} ran dry")
                    break
                continue
            for pid in claimed:
                verdict = str(rng.choice(VERDICT_CHOICES))
                t = time.perf_counter()
                review_id = record_verdict(catalog, pid, verdict, name, 0.5, version)
                log.commit_ms.append((time.perf_counter() - t) * 1000)
                log.stored.append((review_id, pid, verdict))
                if len(log.stored) % UNDO_EVERY == 0:  # a slip: undo it, and judge the patch again
                    t = time.perf_counter()
                    undone = undo_review(catalog, review_id)
                    log.undo_ms.append((time.perf_counter() - t) * 1000)
                    if undone is None:
                        log.errors.append(f"{name}: undo of review {review_id} found nothing to undo")
                    log.undone.append(review_id)
                    t = time.perf_counter()
                    again = record_verdict(catalog, pid, verdict, name, 0.5, version)
                    log.commit_ms.append((time.perf_counter() - t) * 1000)
                    log.stored.append((again, pid, verdict))
                if len(log.stored) - len(log.undone) >= verdicts:
                    break
        let_go(held_since, time.time())  # judged patches stay claimed until release: a certain hold ends here
        release_claims(catalog, name)
    except Exception:
        log.errors.append(f"{name}: {traceback.format_exc(limit=3)}")
    finally:
        log.finished = time.time()
        catalog.close()
    return log


def retrain_round(url: str, root: str, budget: int, seed: int, ready, half) -> tuple[int, float, float, float]:
    """The round's process: once the reviewers are half-way (``half`` set), a real retrain on the
    catalog; returns (version, start, end, seconds)."""
    from wsireview.learn.round import retrain  # imported (torch and all) before the reviewers start

    catalog = open_catalog(url, migrate=False)
    ready.put("retrain")
    half.wait()
    start = time.time()
    result = retrain(catalog, Workspace.resolve(root), spec(budget, seed))
    end = time.time()
    catalog.close()
    return result.model_version_id, start, end, end - start


# -- one database ----------------------------------------------------------------------------------

@dataclass
class Outcome:
    db: str
    reviewers: int
    verdicts: int
    seconds: float
    commit_ms: list[float]
    claim_ms: list[float]
    undo_ms: list[float]
    alone_ms: list[float]
    lost: int
    duplicated: int
    unknown_rows: int
    wrong_undo: int
    overlaps: int
    double_judged: int
    errors: list[str]
    retrain: tuple[int, float, float, float] | None
    moved: int  # reviewers that moved to the new version's queue


def prepare(url: str, root: Path, patches_needed: int, seed: int) -> None:
    """A synthetic cohort with features and a first model version whose queue holds every patch
    the reviewers will need."""
    from wsireview.learn.round import retrain
    from wsireview.learn.synthetic import make_synthetic_cohort

    workspace = Workspace.resolve(root).ensure()
    catalog = open_catalog(url)
    per_slide = 150
    slides = int(np.ceil(patches_needed * 1.8 / per_slide))
    make_synthetic_cohort(catalog, workspace, ENCODER, n_slides=slides, n_patches=per_slide, dim=16, seed=seed)
    retrain(catalog, workspace, spec(patches_needed, seed))
    catalog.close()


def alone(url: str, n: int) -> list[float]:
    """The baseline: one reviewer alone, the same calls, no one else on the catalog."""
    catalog = open_catalog(url, migrate=False)
    version = latest_model_version_id(catalog)
    out: list[float] = []
    while len(out) < n:
        claimed = claim_patches(catalog, "alone", version, policy=POLICY)
        for pid in claimed[: n - len(out)]:
            t = time.perf_counter()
            record_verdict(catalog, pid, "lesion", "alone", 0.5, version)
            out.append((time.perf_counter() - t) * 1000)
    release_claims(catalog, "alone")
    catalog.close()
    return out


def run_one(db: str, url: str, root: Path, reviewers: int, verdicts: int, seed: int, retrain: bool) -> Outcome:
    total = reviewers * verdicts
    baseline_verdicts = min(200, verdicts)
    prepare(url, root, int(total * 1.15) + baseline_verdicts, seed)
    baseline = alone(url, baseline_verdicts)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        ready, go, half = manager.Queue(), manager.Event(), manager.Event()
        with context.Pool(reviewers + 1) as pool:
            jobs = [pool.apply_async(review, (url, f"reviewer-{k}", verdicts, seed * 100 + k, ready, go))
                    for k in range(reviewers)]
            round_job = pool.apply_async(retrain_round, (url, str(root), int(total * 0.7), seed + 1, ready, half)) \
                if retrain else None
            for _ in range(reviewers + (round_job is not None)):  # everyone imported and connected
                ready.get(timeout=600)
            catalog = open_catalog(url, migrate=False)
            t0 = time.time()
            go.set()
            while not all(j.ready() for j in jobs):
                if round_job is not None and not half.is_set():
                    with catalog.session() as session:
                        done = session.scalar(select(func.count()).select_from(Review).where(Review.reviewer != "alone"))
                    if done >= total // 2:  # half-way: a retrain runs while the reviewers go on
                        half.set()
                time.sleep(0.05)
            half.set()  # (a run too short to reach half-way still retrains, after the reviewers)
            logs: list[ReviewerLog] = [j.get() for j in jobs]
            round_result = round_job.get() if round_job is not None else None
    seconds = max(log.finished for log in logs) - t0
    outcome = check(db, catalog, logs, baseline, seconds, round_result)
    if round_result is not None:
        print(f"{db}: retrain ran {round_result[1] - t0:.1f}-{round_result[2] - t0:.1f} s into the run; reviewers "
              f"finished at {min(log.finished for log in logs) - t0:.1f}-{seconds:.1f} s")
    catalog.close()
    return outcome


def check(db: str, catalog, logs: list[ReviewerLog], baseline: list[float], seconds: float, round_result) -> Outcome:
    """What the catalog holds against what every process was told."""
    with catalog.session() as session:
        rows = session.execute(
            select(Review.id, Review.patch_id, Review.verdict, Review.reviewer, Review.undone_at)
            .where(Review.reviewer != "alone")
        ).all()
    by_id = {r.id: r for r in rows}
    told = {rid: (log.name, pid, verdict) for log in logs for rid, pid, verdict in log.stored}
    told_count = sum(len(log.stored) for log in logs)
    lost = sum(1 for rid, (name, pid, verdict) in told.items()
               if rid not in by_id or (by_id[rid].reviewer, by_id[rid].patch_id, by_id[rid].verdict) != (name, pid, verdict))
    duplicated = told_count - len(told)  # an id handed out twice
    unknown_rows = sum(1 for rid in by_id if rid not in told)
    undone = {rid for log in logs for rid in log.undone}
    wrong_undo = sum(1 for rid, r in by_id.items() if (r.undone_at is not None) != (rid in undone))
    standing = defaultdict(set)
    for r in rows:
        if r.undone_at is None:
            standing[r.patch_id].add(r.reviewer)
    double_judged = sum(1 for who in standing.values() if len(who) > 1)
    holds = defaultdict(list)
    for log in logs:
        for pid, start, end in log.holds:
            holds[pid].append((start, end, log.name))
    overlaps = 0
    for intervals in holds.values():
        intervals.sort()
        for (_, e1, n1), (s2, _, n2) in zip(intervals, intervals[1:]):
            if n1 != n2 and s2 < e1:
                overlaps += 1
    return Outcome(
        db=db, reviewers=len(logs), verdicts=told_count - len(undone), seconds=seconds,
        commit_ms=[x for log in logs for x in log.commit_ms], claim_ms=[x for log in logs for x in log.claim_ms],
        undo_ms=[x for log in logs for x in log.undo_ms], alone_ms=baseline, lost=lost, duplicated=duplicated,
        unknown_rows=unknown_rows, wrong_undo=wrong_undo, overlaps=overlaps, double_judged=double_judged,
        errors=[e for log in logs for e in log.errors], retrain=round_result,
        moved=sum(1 for log in logs if len(log.versions) > 1),
    )


# -- the table -------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "-"


def report(outcomes: list[Outcome], target_ms: float, console: Console) -> bool:
    table = Table(title="Simulated reviewers on one catalog (commit = record_verdict)")
    for column in ("database", "reviewers", "verdicts", "verdicts/s", "commit p50 ms", "p95", "p99",
                   "alone p50 / p99 (baseline)", "claim p99", "undo p99", "lost", "dup", "overlaps",
                   "errors", "retrain s"):
        table.add_column(column, justify="left" if column == "database" else "right")
    ok = True
    for o in outcomes:
        p99 = float(np.percentile(o.commit_ms, 99)) if o.commit_ms else float("inf")
        bad = o.lost + o.duplicated + o.unknown_rows + o.wrong_undo + o.overlaps + o.double_judged + len(o.errors)
        ok &= bad == 0 and p99 < target_ms
        table.add_row(
            o.db, str(o.reviewers), str(o.verdicts), f"{o.verdicts / o.seconds:.0f}",
            pct(o.commit_ms, 50), pct(o.commit_ms, 95), pct(o.commit_ms, 99),
            f"{pct(o.alone_ms, 50)} / {pct(o.alone_ms, 99)}", pct(o.claim_ms, 99), pct(o.undo_ms, 99),
            str(o.lost + o.unknown_rows + o.wrong_undo), str(o.duplicated), str(o.overlaps + o.double_judged),
            str(len(o.errors)), f"{o.retrain[3]:.1f}" if o.retrain else "-",
        )
    console.print(table)
    for o in outcomes:
        if o.retrain:
            console.print(f"{o.db}: the retrain wrote version {o.retrain[0]} in {o.retrain[3]:.1f} s while the "
                          f"reviewers worked; {o.moved} of {o.reviewers} reviewers moved to its queue")
        for error in o.errors[:5]:
            console.print(f"[red]{o.db} error:[/] {error}")
    console.print(f"target: zero lost, duplicated, overlapping or errors; commit p99 < {target_ms:.0f} ms: "
                  + ("[green]met[/]" if ok else "[red]missed[/]"))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviewers", type=int, default=8)
    parser.add_argument("--verdicts", type=int, default=500, help="verdicts each reviewer records")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--no-retrain", action="store_true", help="no retrain in the middle")
    parser.add_argument("--target-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=200)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="wsireview-reviewers-") as tmp:
        for db in args.db.split(","):
            root = Path(tmp) / db
            if db == "sqlite":
                url = f"sqlite:///{root / 'catalog.db'}"
                outcomes.append(run_one(db, url, root, args.reviewers, args.verdicts, args.seed, not args.no_retrain))
            elif db == "postgresql":
                sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
                from pg_server import throwaway_postgres

                with throwaway_postgres(Path(tmp) / "pg", settings=("max_connections=200",)) as server:
                    url = server.new_database("reviewers")
                    outcomes.append(run_one(db, url, root, args.reviewers, args.verdicts, args.seed,
                                            not args.no_retrain))
            else:
                parser.error(f"unknown database {db!r}")
    return 0 if report(outcomes, args.target_ms, console) else 1


if __name__ == "__main__":
    sys.exit(main())
