"""The agreement report as Rich tables: `wsireview agreement` prints them, the app's team screen shows them."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from wsireview.learn.agreement import CI_METHOD, AgreementReport, PairAgreement
from wsireview.text import literal

SHORT = {"lesion": "lesion", "not_lesion": "not lesion", "unsure": "unsure", "artifact": "artifact"}


def kappa_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ci_text(pair: PairAgreement) -> str:
    k = pair.kappa
    return "-" if k.low is None or k.high is None else f"{k.low:.2f} to {k.high:.2f}"


def pairs_table(report: AgreementReport) -> Table:
    table = Table(title="Agreement per pair of reviewers", title_justify="left")
    table.add_column("reviewers", no_wrap=True)
    table.add_column("both judged", justify="right")
    table.add_column("agree", justify="right")
    table.add_column("kappa", justify="right")
    table.add_column("95% CI", justify="right", no_wrap=True)
    for pair in report.pairs:
        agreement = "-" if pair.agreement is None else f"{100 * pair.agreement:.1f}%"
        table.add_row(f"{literal(pair.first)} / {literal(pair.second)}", str(pair.patches), agreement,
                      kappa_text(pair.kappa.kappa), ci_text(pair))
    return table


def confusion_table(pair: PairAgreement, categories: tuple[str, ...]) -> Table:
    """Rows: the first reviewer's verdicts; columns: the second's; the diagonal is agreement."""
    table = Table(title=f"{literal(pair.first)} (rows) by {literal(pair.second)} (columns)", title_justify="left")
    table.add_column("")
    for category in categories:
        table.add_column(SHORT.get(category, category), justify="right")
    for i, category in enumerate(categories):
        cells = [Text(str(n), style="bold" if i == j else "") for j, n in enumerate(pair.table[i])]
        table.add_row(SHORT.get(category, category), *cells)
    return table


def summary_lines(report: AgreementReport) -> Text:
    out = Text()
    if report.fleiss_patches:
        out.append(f"Fleiss' kappa over {len(report.reviewers)} reviewers, {report.fleiss_patches} patches "
                   f"with two or more reads: {kappa_text(report.fleiss)}\n")
    out.append(f"over each reviewer's latest read; 95% CI: {CI_METHOD}\n", style="dim")
    out.append(f"adjudication: {report.adjudication_pending} waiting, {report.adjudicated} decided")
    return out


def agreement_renderable(report: AgreementReport) -> Group | Text:
    """Everything `wsireview agreement` prints, for a console or a Textual Static."""
    if not report.pairs:
        readers = ", ".join(f"{literal(r)} ({n})" for r, n in report.reviewers.items()) or "nobody yet"
        return Text(f"No patch has been judged by two reviewers yet (reads: {readers}). A round with "
                    "`wsireview retrain --double-read 0.1` sends a tenth of its queue to a second reviewer.")
    parts: list = [pairs_table(report), summary_lines(report)]
    parts += [confusion_table(pair, report.categories) for pair in report.pairs]
    return Group(*parts)
