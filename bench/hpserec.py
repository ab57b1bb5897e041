"""HPSERec long-tail experts against plain SASRec on ML-100k: overall, head- and tail-item metrics.

Both models train with the same seeds and the embedded defaults of `recmimic teacher train`
(HPSERec with `--experts 4`), each run in its own process. Reports full-ranking test HR@10 and
NDCG@10 (mean ± std over seeds) and wall time, and checks the target: HPSERec's tail-item HR@10
above SASRec's while its head-item HR@10 stays at or above 0.98x SASRec's.

    python bench/hpserec.py --json bench/results/hpserec.json [--seeds 0,1,2] [--quick]

`--quick` caps training at 3 epochs (a smoke run, not a quality figure). `--threads` sets torch's
intra-op threads in each run (default 1: on a small shared machine more threads spin-wait).

Results: docs/benchmarks.md, "HPSERec as a supervised long-tail recommender"; with the builds
they came from: bench/results/hpserec-history.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import host
from spread import mean_std

from seqrec.models import ModelConfig

METRICS = ("HR@10", "NDCG@10")
GROUPS = ("overall", "head_items", "tail_items")
MODELS = {"sasrec": 0, "hpserec": 4}  # name -> experts
QUICK_EPOCHS = 3
HEAD_KEEP = 0.98


def run_one(model: str, seed: int, args: argparse.Namespace, result_path: Path) -> None:
    """Child process: train one model and write its run summary."""
    import torch

    from seqrec.data.loading import load_dataset
    from seqrec.supervised import train_supervised
    from seqrec.train import TrainConfig

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    train_config = TrainConfig(seed=seed, progress=False)
    if args.quick:
        train_config.max_epochs = QUICK_EPOCHS
    summary = train_supervised(
        data,
        ModelConfig(arch="sasrec", experts=MODELS[model], experts_gamma=args.experts_gamma),
        train_config,
        result_path.with_suffix(""),
    )
    result_path.write_text(json.dumps(summary.to_dict()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--quick", action="store_true", help=f"cap at {QUICK_EPOCHS} epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--experts-gamma",
        type=float,
        default=ModelConfig.experts_gamma,
        help="weight of the partition's group-size penalty (HPSERec only)",
    )
    parser.add_argument(
        "--one", nargs=3, metavar=("MODEL", "SEED", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args, Path(args.one[2]))
        return
    seeds = [int(s) for s in args.seeds.split(",")]

    runs: dict[str, list[dict]] = {model: [] for model in MODELS}
    with tempfile.TemporaryDirectory() as scratch:
        for model in MODELS:
            for seed in seeds:
                result = Path(scratch) / f"{model}-{seed}.json"
                cmd = [sys.executable, __file__, "--json", str(args.json)]
                cmd += ["--dataset", args.dataset, "--threads", str(args.threads)]
                cmd += ["--experts-gamma", str(args.experts_gamma)]
                cmd += ["--quick"] if args.quick else []
                start = time.perf_counter()
                subprocess.run([*cmd, "--one", model, str(seed), str(result)], check=True)
                run = json.loads(result.read_text())
                run["wall_s"] = time.perf_counter() - start
                runs[model].append(run)
                test = run["test"]
                print(
                    f"{model} seed {seed}: HR@10 {test['overall']['HR@10']:.4f}"
                    f" head {test['head_items']['HR@10']:.4f}"
                    f" tail {test['tail_items']['HR@10']:.4f}"
                    f" epochs {run['training']['epochs_run']} {run['wall_s']:.0f}s",
                    flush=True,
                )

    summary: dict = {}
    for model, model_runs in runs.items():
        summary[model] = {
            group: {m: mean_std([r["test"][group][m] for r in model_runs]) for m in METRICS}
            for group in GROUPS
        }
        summary[model]["wall_s"] = mean_std([r["wall_s"] for r in model_runs])
        summary[model]["epochs_run"] = mean_std([r["training"]["epochs_run"] for r in model_runs])
    summary["hpserec"]["expert_group_sizes"] = runs["hpserec"][0]["training"]["expert_group_sizes"]

    first = runs["sasrec"][0]
    print(f"\n{args.dataset} (sha256 {first['dataset']['sha256']}), seeds {seeds}")
    header = "| model | " + " | ".join(f"{g} {m}" for g in GROUPS for m in METRICS) + " | wall s |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    for model, s in summary.items():
        cells = [f"{s[g][m]['mean']:.4f} ± {s[g][m]['std']:.4f}" for g in GROUPS for m in METRICS]
        print(f"| {model} | " + " | ".join(cells) + f" | {s['wall_s']['mean']:.0f} |")

    sas, hps = summary["sasrec"], summary["hpserec"]
    tail_gain = hps["tail_items"]["HR@10"]["mean"] - sas["tail_items"]["HR@10"]["mean"]
    head_ratio = hps["head_items"]["HR@10"]["mean"] / sas["head_items"]["HR@10"]["mean"]
    target = {
        "tail_hr10_gain": tail_gain,
        "head_hr10_ratio": head_ratio,
        "met": bool(tail_gain > 0 and head_ratio >= HEAD_KEEP),
    }
    print(
        f"\ntarget: tail-item HR@10 {'+' if tail_gain >= 0 else ''}{tail_gain:.4f} vs SASRec"
        f" (need > 0), head-item HR@10 ratio {head_ratio:.3f} (need >= {HEAD_KEEP})"
        f" -> {'MET' if target['met'] else 'MISSED'}"
    )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "dataset": first["dataset"],
                "seeds": seeds,
                "quick": args.quick,
                "threads": args.threads,
                "experts_gamma": args.experts_gamma,
                "machine": host(),
                "summary": summary,
                "target": target,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
