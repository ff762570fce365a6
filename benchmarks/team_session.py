"""A simulated team session: two reviewers on one queue with blinded double reads, then agreement and
adjudication, through the same functions and commands a team uses.

    nice -n 10 python benchmarks/team_session.py                  # 6 demo slides, half the queue read twice
    nice -n 10 python benchmarks/team_session.py --slides 8 --budget 60 --double-read 0.3

1. A demo cohort (``medium``) is generated, added with its labels and retrained with
   ``--encoder stain-stats --double-read SHARE``.
2. anna and ben work through the queue at the same time, taking turns: each takes the next item
   the queue offers them (``queue_entries(reviewer=...)``, whose items they may still judge) and
   answers from the ground truth with their own seeded error rate (anna 5% wrong; ben 20% wrong
   and 10% unsure). Double-read items wait until both have judged them.
3. ``wsireview agreement`` is printed; carol adjudicates the adjudication queue from the truth;
   ``wsireview export`` (now ``--consensus adjudicated``) is compared with ``--consensus majority``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsireview.catalog import LESION, NOT_LESION, UNSURE, open_catalog  # noqa: E402
from wsireview.catalog.queries import adjudication_entries, queue_entries  # noqa: E402
from wsireview.cli import main  # noqa: E402
from wsireview.learn.reviews import record_adjudication, record_verdict  # noqa: E402
from wsireview.learn.truth import truth_labels  # noqa: E402
from wsireview.workspace import Workspace  # noqa: E402

READERS = {"anna": (0.05, 0.0), "ben": (0.20, 0.10)}  # (share wrong, share unsure)


def answer(truth: bool, wrong: float, unsure: float, rng: random.Random) -> str:
    roll = rng.random()
    if roll < unsure:
        return UNSURE
    lesion = truth if roll >= unsure + wrong else not truth
    return LESION if lesion else NOT_LESION


def run(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="team-session-"))
    ws_dir, cohort = root / "ws", root / "cohort"
    common = ["--workspace", str(ws_dir)]
    assert main(common + ["demo", "--out", str(cohort), "--slides", str(args.slides), "--difficulty", "medium",
                          "--seed", str(args.seed)]) == 0
    assert main(common + ["add", str(cohort), "--labels", str(cohort / "labels.csv")]) == 0
    assert main(common + ["retrain", "--encoder", "stain-stats", "--budget", str(args.budget),
                          "--double-read", str(args.double_read), "--seed", str(args.seed), "--no-progress"]) == 0
    catalog = open_catalog(Workspace.resolve(ws_dir).db_url)
    truth = truth_labels(catalog, cohort)
    rngs = {name: random.Random(f"{args.seed}-{name}") for name in READERS}
    given = {name: 0 for name in READERS}
    while True:
        progressed = False
        for name, (wrong, unsure) in READERS.items():  # taking turns, as two people at once would
            entry = next((e for e in queue_entries(catalog, reviewer=name) if not e.done), None)
            if entry is None:
                continue
            verdict = answer(truth[entry.patch_id], wrong, unsure, rngs[name])
            record_verdict(catalog, entry.patch_id, verdict, name, 3.0, entry.model_version_id)
            given[name] += 1
            progressed = True
        if not progressed:
            break
    queue = queue_entries(catalog)
    print(f"\nqueue: {len(queue)} items, {sum(e.reads == 2 for e in queue)} double reads; verdicts given: "
          + ", ".join(f"{n} {c}" for n, c in given.items()))
    print("\n$ wsireview agreement")
    main(common + ["agreement"])
    waiting = adjudication_entries(catalog)
    for entry in waiting:
        record_adjudication(catalog, entry.patch_id, LESION if truth[entry.patch_id] else NOT_LESION, "carol",
                            5.0, entry.model_version_id)
    print(f"\ncarol adjudicated {len(waiting)} patches")
    for consensus in ("adjudicated", "majority"):
        out = root / f"export-{consensus}"
        assert main(common + ["export", str(out), "--format", "csv", "--consensus", consensus]) == 0
        doc = json.loads((out / "export.json").read_text())
        print(f"export --consensus {consensus}: {doc['exported_patches']} patches {doc['per_label']}, "
              f"dropped {doc['dropped']}")
    print("\n$ wsireview agreement --json (after adjudication: the adjudication counts)")
    main(common + ["agreement", "--json"])
    catalog.close()
    print(f"\nworkspace: {ws_dir}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=6)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--double-read", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    run(parser.parse_args())
