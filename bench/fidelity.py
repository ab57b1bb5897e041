"""Reproduction benchmark: BAHSD against the older extraction objectives on ML-100k.

One SASRec teacher (trained once, or reused from the work directory) is served over real HTTP.
For each regime (seeded: prefixes of the real training histories; data-free: autoregressive
queries) and each seed, one extraction with a fixed budget of paid answers produces one probe
set, and every method trains its student on exactly that probe set, learning from every
answered history (truncated views included); BAHSD also uses the views as probes (DESIGN
section 6). Students are selected on held-out probes only; the real test split is used once, to
report. Teacher and students are scored with full ranking on the leave-one-out test split.

    python bench/fidelity.py --json bench/results/fidelity.json [--quick] [--seeds 0,1,2]
    python bench/fidelity.py --json ALL.json --merge PART1.json PART2.json ...

Writes JSON and Markdown (same stem) and prints the table and the target checks. Parts of one
benchmark (say one regime per process, on the same teacher) are combined with `--merge`.
Teacher, probe sets and finished students are kept in `--workdir` and reused, so a killed run
started again only trains what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from host import host
from spread import mean_std

from distill.config import DistillConfig, ObjectiveConfig
from distill.fidelity import EvaluateConfig, evaluate_student
from distill.run import SUMMARY_FILENAME as DISTILL_SUMMARY
from distill.run import distill
from extractor.config import ExtractConfig
from extractor.run import SUMMARY_FILENAME, extract
from seqrec.data.loading import load_dataset
from seqrec.models import ModelConfig
from seqrec.supervised import train_supervised
from seqrec.train import TrainConfig
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

KEY = "fidelity-bench"
DATASET = "ml-100k"
METHODS: dict[str, tuple[str, int]] = {  # name -> (objective, HPSERec experts)
    "bahsd": ("bahsd", 0),
    "dfme": ("dfme", 0),
    "kl": ("kl", 0),
    "bahsd+hpserec": ("bahsd", 4),
}
COLUMNS = (
    ("NDCG@10", "overall", "NDCG@10"),
    ("HR@10", "overall", "HR@10"),
    ("Agr@1", "agreement", "agr1"),
    ("Agr@10", "agreement", "agr10"),
    ("tail-user NDCG@10", "tail_users", "NDCG@10"),
    ("head-user NDCG@10", "head_users", "NDCG@10"),
)


def ensure_teacher(directory: Path, max_epochs: int | None) -> Path:
    """The teacher artifact: trained once with seed 0, reused afterwards."""
    if not (directory / "config.json").is_file():
        train = TrainConfig(seed=0, progress=False)
        if max_epochs is not None:
            train = replace(train, max_epochs=max_epochs)
        train_supervised(load_dataset(DATASET), ModelConfig(), train, directory)
    return directory


def regime_source(regime: str, quick: bool) -> dict[str, Any]:
    if regime == "seeded":
        return {"source": "seeded", "dataset": DATASET, "prefixes": 2 if quick else 4}
    return {"source": "autoregressive", "n_sequences": 150 if quick else 500, "max_length": 50}


def extract_once(url: str, out: Path, budget: int, regime: str, seed: int, quick: bool) -> dict:
    """The regime's probe set for this seed; an existing one (same settings) is reused."""
    if not (out / SUMMARY_FILENAME).is_file():
        config = ExtractConfig(
            teacher_url=url,
            api_key=KEY,
            budget=budget,
            out=out,
            k=100,
            seed=seed,
            **regime_source(regime, quick),
        )
        asyncio.run(extract(config, progress=False))
    return json.loads((out / SUMMARY_FILENAME).read_text())


def student_once(config: DistillConfig, teacher: Path) -> tuple[dict, dict, bool]:
    """Train and evaluate one student, or read back one that a previous (maybe killed) run of
    the benchmark finished: (distill summary, report, reused)."""
    summary_path = config.out / DISTILL_SUMMARY
    report_dir = config.out / "report"
    if summary_path.is_file() and (report_dir / "report.json").is_file():
        summary = json.loads(summary_path.read_text())
        return summary, json.loads((report_dir / "report.json").read_text()), True
    summary = distill(config).to_dict()
    evaluation = EvaluateConfig(
        teacher=str(teacher), student=config.out, dataset=DATASET, out=report_dir
    )
    report, _ = evaluate_student(evaluation)
    return summary, report, False


def row(report: dict, who: str) -> dict[str, float]:
    """The table's columns for the teacher or the student of one report."""
    values = {}
    for label, group, metric in COLUMNS:
        if group == "agreement":
            values[label] = report["agreement"]["overall"][metric] if who == "student" else 1.0
        else:
            values[label] = report[who][group][metric]
    return values


def table_from_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """Per regime, the teacher's and each method's columns over seeds (teacher first)."""
    raw: dict[str, dict[str, list[dict[str, float]]]] = {}
    teacher_seeds: set[tuple[str, int]] = set()
    for run in runs:
        by_model = raw.setdefault(run["regime"], {})
        if (run["regime"], run["seed"]) not in teacher_seeds:
            teacher_seeds.add((run["regime"], run["seed"]))
            by_model.setdefault("teacher", []).append(row(run["report"], "teacher"))
        by_model.setdefault(run["method"], []).append(row(run["report"], "student"))
    return {
        regime: {
            model: over_seeds(rows)
            for model, rows in sorted(models.items(), key=lambda kv: kv[0] != "teacher")
        }
        for regime, models in raw.items()
    }


def over_seeds(rows: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Each column's mean ± std over the seeds' rows, with the runs themselves."""
    return {
        label: {**mean_std(values := [r[label] for r in rows]), "runs": values} for label in rows[0]
    }


def markdown(results: dict[str, Any]) -> str:
    header = "| regime | model | " + " | ".join(label for label, *_ in COLUMNS) + " |"
    lines = [
        "# Fidelity benchmark",
        "",
        f"ML-100k (sha256 {results['dataset']['sha256'][:12]}…), teacher SASRec seed 0, "
        f"budget {results['budget']} paid answers per extraction, k=100, scales 1, 1/2, 1/4, "
        f"seeds {results['seeds']}; mean ± std over seeds.",
        "",
        header,
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for regime, models in results["table"].items():
        for model, stats in models.items():
            cells = " | ".join(
                f"{stats[label]['mean']:.4f} ± {stats[label]['std']:.4f}" for label, *_ in COLUMNS
            )
            lines.append(f"| {regime} | {model} | {cells} |")
    lines += ["", "Targets:", ""] + [f"- {check}" for check in results["checks"]]
    return "\n".join(lines) + "\n"


def checks(table: dict[str, dict[str, dict]]) -> list[str]:
    """The issue's targets, each stated with the figures that decide it."""
    out = []
    seeded, free = table.get("seeded"), table.get("data-free")

    def m(stats: dict, label: str) -> float:
        return stats[label]["mean"]

    if seeded and "bahsd" in seeded:
        teacher, bahsd = seeded["teacher"], seeded["bahsd"]
        ok = m(bahsd, "NDCG@10") >= m(teacher, "NDCG@10")
        out.append(
            f"seeded: BAHSD NDCG@10 {m(bahsd, 'NDCG@10'):.4f} >= teacher "
            f"{m(teacher, 'NDCG@10'):.4f}: {'met' if ok else 'MISSED'}"
        )
        if "dfme" in seeded:
            dfme = seeded["dfme"]
            gap = m(bahsd, "tail-user NDCG@10") - m(dfme, "tail-user NDCG@10")
            spread = max(bahsd["tail-user NDCG@10"]["std"], dfme["tail-user NDCG@10"]["std"])
            verdict = "met" if gap > spread else "MISSED"
            if len(bahsd["NDCG@10"]["runs"]) < 2:
                verdict = "undecided: needs several seeds for a spread"
            out.append(
                f"seeded: BAHSD tail-user NDCG@10 beats dfme by {gap:+.4f} "
                f"(seed spread {spread:.4f}): {verdict}"
            )
    if free and "bahsd" in free:
        teacher, bahsd = free["teacher"], free["bahsd"]
        if "dfme" in free:
            ok = m(bahsd, "Agr@10") >= m(free["dfme"], "Agr@10")
            out.append(
                f"data-free: BAHSD Agr@10 {m(bahsd, 'Agr@10'):.4f} >= dfme "
                f"{m(free['dfme'], 'Agr@10'):.4f}: {'met' if ok else 'MISSED'}"
            )
        share = m(bahsd, "NDCG@10") / m(teacher, "NDCG@10")
        out.append(
            f"data-free: BAHSD keeps {share:.1%} of the teacher's NDCG@10 (target 90%): "
            f"{'met' if share >= 0.9 else 'MISSED'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="1 seed, small budget, < 10 min")
    parser.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2)")
    parser.add_argument("--budget", type=int, default=None, help="paid answers per extraction")
    parser.add_argument("--regimes", default="seeded,data-free")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-fidelity"))
    parser.add_argument("--port", type=int, default=18767, help="the teacher's loopback port")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine these result files")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.json)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",")]
    budget = args.budget or (2000 if args.quick else 10000)
    methods = args.methods.split(",")
    workdir = args.workdir / ("quick" if args.quick else "full")
    started = time.monotonic()

    teacher = ensure_teacher(workdir / "teacher", 10 if args.quick else None)
    settings = TeacherSettings(model_dir=teacher, api_keys=[KEY], rate=1e9, quota=10**9)
    runs: list[dict[str, Any]] = []
    with running(create_app(settings), port=args.port) as url:
        for regime in args.regimes.split(","):
            for seed in seeds:
                base = workdir / regime / f"seed{seed}"
                extraction = extract_once(url, base / "probes", budget, regime, seed, args.quick)
                for method in methods:
                    objective, experts = METHODS[method]
                    config = DistillConfig(
                        probes=base / "probes",
                        out=base / method,
                        model=ModelConfig(experts=experts),
                        objective=ObjectiveConfig(name=objective),  # type: ignore[arg-type]
                        max_epochs=20 if args.quick else 100,
                        seed=seed,
                        progress=False,
                    )
                    summary, report, reused = student_once(config, teacher)
                    runs.append(
                        {
                            "regime": regime,
                            "seed": seed,
                            "method": method,
                            "paid": extraction["spent_total"],
                            "distill": summary,
                            "report": report,
                        }
                    )
                    print(
                        f"{regime:9s} seed {seed} {method:14s} "
                        f"NDCG@10 {report['student']['overall']['NDCG@10']:.4f} "
                        f"(teacher {report['teacher']['overall']['NDCG@10']:.4f}) "
                        f"Agr@10 {report['agreement']['overall']['agr10']:.3f} "
                        f"[{summary['seconds']:.0f}s{', reused' if reused else ''}]",
                        flush=True,
                    )

    results = {
        "dataset": load_dataset(DATASET).card(),
        "budget": budget,
        "seeds": seeds,
        "quick": args.quick,
        "runs": runs,
        "wall_s": time.monotonic() - started,
        "machine": host(),
    }
    write(results, args.json)


def merge(parts: list[Path], out: Path) -> None:
    """One report from parts run separately on the same teacher, budget and mode."""
    loaded = [json.loads(part.read_text()) for part in parts]
    for field in ("dataset", "budget", "quick"):
        if len({json.dumps(part[field]) for part in loaded}) != 1:
            raise SystemExit(f"error: the parts differ in {field!r}; they are not one benchmark")
    keys = [(r["regime"], r["seed"], r["method"]) for part in loaded for r in part["runs"]]
    if len(set(keys)) != len(keys):
        raise SystemExit("error: the parts repeat a (regime, seed, method) run")
    results = {
        **{field: loaded[0][field] for field in ("dataset", "budget", "quick", "machine")},
        "seeds": sorted({seed for part in loaded for seed in part["seeds"]}),
        "runs": [run for part in loaded for run in part["runs"]],
        "wall_s": sum(part["wall_s"] for part in loaded),
        "merged_from": [str(part) for part in parts],
    }
    write(results, out)


def write(results: dict[str, Any], path: Path) -> None:
    """Add the table and target checks, then write JSON and Markdown and print the table."""
    table = table_from_runs(results["runs"])
    results = {**results, "table": table, "checks": checks(table)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    path.with_suffix(".md").write_text(text)
    print(text)
    print(f"wall time {results['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
