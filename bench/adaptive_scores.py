"""Adaptive rounds' scores, one run each: which unpaid queries are worth paying for.

Each run is `adaptive.run.steal` against the kept SASRec teacher (`bench/teachers/sasrec`,
served over real HTTP as a black box) with one informativeness score, rounds ending at 1,000,
2,000 and 5,000 paid answers and the budget, the default objective; its final student (trained
on everything paid, from the last round's weights) is evaluated on ML-100k's real test split.
The rounds' students are selected on held-out probes of their own run only.

    python bench/adaptive_scores.py --json bench/results/adaptive-scores.json \
        --scores views,margin,random
    python bench/adaptive_scores.py --json OUT.json --source autoregressive --seeds 0,1,2

A run's directory under `--workdir` is resumed when started again (`steal` reads its rounds
back), and finished runs are read back from the `--json` file, so the bench can be run in parts.
The one-shot point to compare with is the leakage curve's (`bench/leakage.py`, the default
objective trained from scratch on a one-shot probe set at the same budget).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from host import host
from leakage import metric_row

from adaptive.config import AdaptiveConfig
from adaptive.run import StealConfig, steal
from distill.config import DistillConfig
from distill.fidelity import fidelity_report, rank_with_model
from extractor.config import ExtractConfig
from seqrec.artifact_files import WEIGHTS
from seqrec.artifacts import load_artifact
from seqrec.data.dataset import leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.hashing import file_sha256
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

TEACHER = Path(__file__).resolve().parent / "teachers" / "sasrec"
DATASET = "ml-100k"
KEY = "adaptive-bench"
ROUND_ENDS = (1000, 2000, 5000)


def run_one(url: str, out: Path, source: str, score: str, seed: int, budget: int) -> dict:
    """One adaptive run (resumed if its directory holds one); its rounds and seconds."""
    extra = {"dataset": DATASET} if source == "seeded" else {"n_sequences": budget // 20 + 10}
    config = StealConfig(
        out=out,
        extract=ExtractConfig(
            teacher_url=url,
            api_key=KEY,
            budget=budget,
            out=out,
            source=source,
            k=100,
            seed=seed,
            **extra,
        ),
        distill=DistillConfig(probes=out, out=out, max_epochs=100, seed=seed, progress=False),
        adaptive=AdaptiveConfig(boundaries=(*ROUND_ENDS, budget), score=score),
    )
    started = time.monotonic()
    records = steal(config)
    return {
        "wall_s": time.monotonic() - started,  # of this invocation: a resumed run's is shorter
        "seconds": sum(sum(r.seconds.values()) for r in records),
        "rounds": [r.to_dict() for r in records],
        "student": config.distill.out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--source", default="seeded", help="seeded | autoregressive")
    parser.add_argument("--scores", default="views,margin,committee,random")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-adaptive"))
    parser.add_argument("--port", type=int, default=18831)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    earlier = json.loads(args.json.read_text())["runs"] if args.json.is_file() else []
    done = {(r["source"], r["score"], r["seed"], r["budget"]): r for r in earlier}
    data = load_dataset(DATASET)
    split = leave_one_out(data)
    teacher_ranked = rank_with_model(load_artifact(TEACHER), data, split)
    settings = TeacherSettings(model_dir=TEACHER, api_keys=[KEY], rate=1e9, quota=10**9)
    runs = []
    with running(create_app(settings), port=args.port) as url:
        for seed in (int(s) for s in args.seeds.split(",")):
            for score in args.scores.split(","):
                key = (args.source, score, seed, args.budget)
                if key in done:
                    runs.append(done.pop(key))
                    continue
                out = args.workdir / f"{args.source}-{score}-s{seed}-b{args.budget}"
                result = run_one(url, out, args.source, score, seed, args.budget)
                student = rank_with_model(load_artifact(result.pop("student")), data, split)
                report = fidelity_report(teacher_ranked, student, split)
                runs.append(
                    {
                        "source": args.source,
                        "score": score,
                        "seed": seed,
                        "budget": args.budget,
                        **metric_row(report, "student"),
                        **result,
                    }
                )
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "rounds"}), flush=True)
    results = {
        "command": "python bench/adaptive_scores.py " + " ".join(sys.argv[1:]),
        "teacher_version": file_sha256(TEACHER / WEIGHTS),
        "runs": runs + list(done.values()),
        "machine": host(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
