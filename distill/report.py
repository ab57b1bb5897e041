"""The fidelity report in three forms: JSON for machines, Markdown for people, a PNG chart.

Every form names what the figures depend on: the dataset and its sha256, the student's seed,
and the extraction's budget and spend, so a figure cannot travel without its conditions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from seqrec.evaluate import GROUPS  # noqa: E402

REPORT_JSON, REPORT_MD, REPORT_PNG = "report.json", "report.md", "report.png"
_LABELS = {
    "overall": "overall",
    "head_users": "head users",
    "tail_users": "tail users",
    "head_items": "head-item targets",
    "tail_items": "tail-item targets",
}
# What the table's terms mean; the item rows count test users, where `data stats` counts items.
DEFINITIONS = (
    "Terms:",
    "",
    "- **Agr@K**: the share of the teacher's top K the student also puts in its top K, averaged "
    "over the test users (1 = the same K items).",
    "- **head users** / **tail users**: users whose training history is longer than the 80th "
    "percentile of training lengths / all the others.",
    "- **head-item targets** / **tail-item targets**: test users whose held-out item is a head "
    "item (training count above the 0.8 quantile of item counts) / a tail item. Their "
    "`test users` count users, not items; `recmimic data stats` counts the head items "
    "themselves.",
    "- **HR@10**, **NDCG@10**: hit rate and NDCG of the held-out item in the full ranking.",
)


def _paid(run: dict[str, Any]) -> str:
    """Probing and evaluation apart, each with its own budget."""
    paid = run.get("paid") or {"probing": run.get("spent")}
    probing, evaluation = paid.get("probing"), paid.get("evaluation")
    budget = run.get("budget")
    text = (
        f"probing budget {budget if budget is not None else '?'} "
        f"({probing if probing is not None else '?'} paid)"
    )
    if evaluation:
        own = run.get("evaluation_budget")
        text += f", evaluation budget {own if own is not None else '?'} ({evaluation} paid)"
    elif evaluation == 0:
        text += ", evaluation paid nothing (a local teacher)"
    return text


def _conditions(report: dict[str, Any]) -> str:
    data, run = report["dataset"], report["run"]
    return (
        f"dataset {data.get('name')} (sha256 {str(data.get('sha256'))[:12]}…), "
        f"student seed {run.get('seed')}, {_paid(run)}{_unknown(run)}"
    )


def _unknown(run: dict[str, Any]) -> str:
    unknown = run.get("unknown_teacher_items")
    if not unknown:
        return ""
    return f"; {unknown} teacher answer slots name items the dataset lacks (counted as misses)"


def markdown(report: dict[str, Any]) -> str:
    """A table per group: teacher and student HR@10/NDCG@10, and Agr@1/Agr@10; then the terms."""
    lines = [
        "# Fidelity report",
        "",
        _conditions(report) + ".",
        f"Teacher: `{report['teacher_source']}`. Student: `{report['student_dir']}`.",
        "",
        "| group | test users | teacher HR@10 | student HR@10 | teacher NDCG@10 "
        "| student NDCG@10 | Agr@1 | Agr@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group in GROUPS:
        teacher, student = report["teacher"][group], report["student"][group]
        agreement = report["agreement"][group]
        cells = [
            _cell(teacher.get("HR@10"), 4),
            _cell(student.get("HR@10"), 4),
            _cell(teacher.get("NDCG@10"), 4),
            _cell(student.get("NDCG@10"), 4),
            _cell(agreement.get("agr1"), 3),
            _cell(agreement.get("agr10"), 3),
        ]
        lines.append(f"| {_LABELS[group]} | {student['users']} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", *DEFINITIONS]) + "\n"


def _cell(value: float | None, digits: int) -> str:
    """A table cell; a group without test users has no metrics: a dash."""
    return "–" if value is None else f"{value:.{digits}f}"


def chart(report: dict[str, Any], path: Path) -> None:
    """Teacher vs student NDCG@10 per group, with the student's Agr@10 beside it."""
    labels = [_LABELS[group] for group in GROUPS]
    positions = range(len(GROUPS))
    width = 0.38
    figure, (accuracy, agreement) = plt.subplots(1, 2, figsize=(11, 4))
    for offset, who in ((-width / 2, "teacher"), (width / 2, "student")):
        values = [report[who][group].get("NDCG@10", 0.0) for group in GROUPS]
        accuracy.bar([p + offset for p in positions], values, width, label=who)
    accuracy.set_xticks(list(positions), labels, rotation=20)
    accuracy.set_ylabel("NDCG@10 (full ranking)")
    accuracy.legend()
    accuracy.set_title("accuracy on held-out test items")
    agr10 = [report["agreement"][g].get("agr10") or 0.0 for g in GROUPS]
    agreement.bar(positions, agr10, color="tab:green")
    agreement.set_xticks(list(positions), labels, rotation=20)
    agreement.set_ylim(0, 1)
    agreement.set_ylabel("Agr@10 (student vs teacher)")
    agreement.set_title("fidelity to the teacher")
    figure.suptitle(_conditions(report), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    """Write JSON, Markdown and PNG into `directory`; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / REPORT_JSON,
        "markdown": directory / REPORT_MD,
        "png": directory / REPORT_PNG,
    }
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(markdown(report))
    chart(report, paths["png"])
    return paths
