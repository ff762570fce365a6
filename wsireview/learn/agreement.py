"""How far reviewers agree: Cohen's kappa per pair of reviewers, Fleiss' kappa over all of them.

Computed over each reviewer's latest read of a patch (undone reads and adjudications left out),
with the four verdicts as categories (``unsure`` is a category of its own here: saying "unsure"
where a colleague saw a lesion is a disagreement).

- Cohen's kappa (Cohen 1960) per pair, over the patches both judged, with a 95% confidence
  interval kappa ± 1.96 SE, the SE from the large-sample variance of Fleiss, Cohen & Everitt
  (1969) (the "ASE" SAS PROC FREQ prints), clipped to [-1, 1]. Kappa is undefined (None) when
  chance agreement is 1: both reviewers gave one same verdict to every patch.
- Fleiss' kappa (Fleiss 1971) over the patches with at least two reads. Patches are read by
  different numbers of reviewers (a double read by two, an occasional third), so it uses the
  form for unequal numbers of ratings per subject (Fleiss, Levin & Paik 2003; Fleiss & Cuzick
  1979 for two categories): kappa = 1 - sum_i sum_j x_ij (n_i - x_ij) / n_i / (N (n̄ - 1)
  sum_j p_j q_j), with p_j the share of all reads in category j and n̄ the mean reads per patch;
  with equal numbers of reads it is exactly Fleiss' 1971 kappa.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wsireview.catalog import VERDICTS, Catalog
from wsireview.catalog.verdicts import awaiting_adjudication, load_reads

Z_95 = 1.959964  # two-sided 95% normal quantile
CI_METHOD = "kappa ± 1.96 SE, SE of Fleiss, Cohen & Everitt (1969)"


@dataclass(frozen=True)
class Kappa:
    kappa: float | None  # None: undefined (chance agreement is 1)
    se: float | None
    low: float | None
    high: float | None
    observed: float | None  # observed agreement, 0..1 (None without any patch)


def cohen_kappa(table: Sequence[Sequence[float]]) -> Kappa:
    """Cohen's kappa of a square confusion table (rows: one rater, columns: the other) with its 95% CI."""
    k = len(table)
    n = float(sum(sum(row) for row in table))
    if n == 0:
        return Kappa(None, None, None, None, None)
    p = [[table[i][j] / n for j in range(k)] for i in range(k)]
    rows = [sum(p[i]) for i in range(k)]
    cols = [sum(p[i][j] for i in range(k)) for j in range(k)]
    observed = sum(p[i][i] for i in range(k))
    chance = sum(rows[i] * cols[i] for i in range(k))
    if math.isclose(chance, 1.0):
        return Kappa(None, None, None, None, observed)
    kappa = (observed - chance) / (1 - chance)
    # Fleiss, Cohen & Everitt (1969), the variance of kappa when it is not 0.
    diagonal = sum(p[i][i] * (1 - (rows[i] + cols[i]) * (1 - kappa)) ** 2 for i in range(k))
    off = (1 - kappa) ** 2 * sum(p[i][j] * (cols[i] + rows[j]) ** 2
                                 for i in range(k) for j in range(k) if i != j)
    correction = (kappa - chance * (1 - kappa)) ** 2
    variance = max(0.0, (diagonal + off - correction) / (n * (1 - chance) ** 2))
    se = math.sqrt(variance)
    return Kappa(kappa, se, max(-1.0, kappa - Z_95 * se), min(1.0, kappa + Z_95 * se), observed)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of ``counts[i][j]`` (reads of patch i in category j), any number (≥ 2) of reads
    per patch (see the module's note); None when there is no patch or a single category in all."""
    subjects = [row for row in counts if sum(row) >= 2]
    if not subjects:
        return None
    reads = [sum(row) for row in subjects]
    total = sum(reads)
    mean_reads = total / len(subjects)
    shares = [sum(row[j] for row in subjects) / total for j in range(len(subjects[0]))]
    spread = sum(s * (1 - s) for s in shares)
    if spread == 0:
        return None
    disagreement = sum(x * (n - x) / n for row, n in zip(subjects, reads) for x in row)
    return 1 - disagreement / (len(subjects) * (mean_reads - 1) * spread)


@dataclass(frozen=True)
class PairAgreement:
    """Two reviewers over the patches both judged."""

    first: str
    second: str
    patches: int
    agreed: int
    kappa: Kappa
    table: list[list[int]]  # rows: first's verdict, columns: second's, in CATEGORIES order

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.patches if self.patches else None


@dataclass
class AgreementReport:
    categories: tuple[str, ...]
    reviewers: dict[str, int]  # reviewer -> patches read
    pairs: list[PairAgreement] = field(default_factory=list)
    fleiss: float | None = None
    fleiss_patches: int = 0  # patches with at least two reads
    adjudication_pending: int = 0
    adjudicated: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "categories": list(self.categories),
            "reviewers": self.reviewers,
            "ci_method": CI_METHOD,
            "pairs": [{
                "reviewers": [p.first, p.second], "patches": p.patches, "agreed": p.agreed,
                "percent_agreement": None if p.agreement is None else round(100 * p.agreement, 2),
                "kappa": p.kappa.kappa, "kappa_se": p.kappa.se, "kappa_ci95": [p.kappa.low, p.kappa.high],
                "confusion": {"rows": p.first, "columns": p.second, "table": p.table},
            } for p in self.pairs],
            "fleiss": {"kappa": self.fleiss, "patches": self.fleiss_patches, "reviewers": len(self.reviewers)},
            "adjudication": {"pending": self.adjudication_pending, "decided": self.adjudicated},
        }


CATEGORIES = VERDICTS


def agreement_report(catalog: Catalog) -> AgreementReport:
    """Agreement over the catalog's reads: every pair of reviewers who judged a patch in common."""
    with catalog.session() as session:
        patches = load_reads(session)
        pending = len(awaiting_adjudication(session, patches))
    index = {v: i for i, v in enumerate(CATEGORIES)}
    by_reviewer: dict[str, dict[int, str]] = {}
    counts = []
    for pid, patch in patches.items():
        for vote in patch.reads:
            by_reviewer.setdefault(vote.reviewer, {})[pid] = vote.verdict
        row = [0] * len(CATEGORIES)
        for vote in patch.reads:
            row[index[vote.verdict]] += 1
        counts.append(row)
    report = AgreementReport(categories=CATEGORIES,
                             reviewers={r: len(v) for r, v in sorted(by_reviewer.items())})
    for first, second in itertools.combinations(sorted(by_reviewer), 2):
        a, b = by_reviewer[first], by_reviewer[second]
        both = sorted(a.keys() & b.keys())
        if not both:
            continue
        table = [[0] * len(CATEGORIES) for _ in CATEGORIES]
        for pid in both:
            table[index[a[pid]]][index[b[pid]]] += 1
        agreed = sum(table[i][i] for i in range(len(CATEGORIES)))
        report.pairs.append(PairAgreement(first, second, len(both), agreed, cohen_kappa(table), table))
    report.fleiss = fleiss_kappa(counts)
    report.fleiss_patches = sum(1 for row in counts if sum(row) >= 2)
    report.adjudication_pending = pending
    report.adjudicated = sum(1 for p in patches.values() if p.adjudication is not None)
    return report
