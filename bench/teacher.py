"""Teacher quality benchmark: SASRec and BERT4Rec on ML-100k, several seeds, mean ± std.

Each run trains in its own process (so its peak memory is its own) with the embedded defaults of
`recmimic teacher train` (TrainConfig.for_arch), and reports full-ranking test metrics, wall time
and peak RSS. With --arch, the other architectures' results already in --json are kept.

    python bench/teacher.py --json bench/results/teacher.json [--seeds 0 1 2] [--arch sasrec]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import host
from spread import mean_std

METRICS = ("NDCG@10", "HR@10", "NDCG@20", "HR@20")
GROUPS = ("overall", "tail_users", "head_users", "tail_items", "head_items")


def run_one(arch: str, seed: int, dataset: str, result_path: Path) -> None:
    """Child process: train one teacher and write its summary plus peak memory."""

    from seqrec.artifacts import load_artifact
    from seqrec.data.dataset import leave_one_out
    from seqrec.data.loading import load_dataset
    from seqrec.evaluate import evaluate
    from seqrec.models import ModelConfig
    from seqrec.supervised import train_supervised
    from seqrec.train import TrainConfig

    data = load_dataset(dataset)
    out_dir = result_path.with_suffix("")
    summary = train_supervised(
        data, ModelConfig(arch=arch), TrainConfig.for_arch(arch, seed=seed, progress=False), out_dir
    )
    payload = summary.to_dict()
    # Time one full test evaluation (all users, full ranking plus 100 sampled negatives).
    model = load_artifact(out_dir).model
    start = time.perf_counter()
    evaluate(model, leave_one_out(data), stage="test", seed=seed)
    payload["evaluate_s"] = time.perf_counter() - start
    payload["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_path.write_text(json.dumps(payload))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--arch", nargs="+", default=["sasrec", "bert4rec"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--one", nargs=3, metavar=("ARCH", "SEED", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.dataset, Path(args.one[2]))
        return

    runs: dict[str, list[dict]] = {arch: [] for arch in args.arch}
    with tempfile.TemporaryDirectory() as scratch:
        for arch in args.arch:
            for seed in args.seeds:
                result = Path(scratch) / f"{arch}-{seed}.json"
                start = time.perf_counter()
                cmd = [
                    sys.executable,
                    __file__,
                    "--json",
                    str(args.json),
                    "--dataset",
                    args.dataset,
                ]
                subprocess.run([*cmd, "--one", arch, str(seed), str(result)], check=True)
                run = json.loads(result.read_text())
                run["wall_s"] = time.perf_counter() - start
                runs[arch].append(run)
                overall = run["test"]["overall"]
                print(
                    f"{arch} seed {seed}: NDCG@10 {overall['NDCG@10']:.4f}"
                    f" HR@10 {overall['HR@10']:.4f}"
                    f" epochs {run['training']['epochs_run']} {run['wall_s']:.0f}s"
                    f" {run['peak_rss_mb']:.0f} MB",
                    flush=True,
                )

    summary = {}
    for arch, arch_runs in runs.items():
        summary[arch] = {
            group: {m: mean_std([r["test"][group][m] for r in arch_runs]) for m in METRICS}
            for group in GROUPS
        }
        summary[arch]["wall_s"] = mean_std([r["wall_s"] for r in arch_runs])
        summary[arch]["peak_rss_mb"] = mean_std([r["peak_rss_mb"] for r in arch_runs])
        summary[arch]["evaluate_s"] = mean_std([r["evaluate_s"] for r in arch_runs])
        summary[arch]["epochs_run"] = mean_std([r["training"]["epochs_run"] for r in arch_runs])

    first = next(iter(runs.values()))[0]
    # An --arch subset keeps the other archs' results of an earlier run on the same data and seeds.
    if args.json.exists():
        old = json.loads(args.json.read_text())
        if old["dataset"]["sha256"] == first["dataset"]["sha256"] and old["seeds"] == args.seeds:
            for arch in sorted(old["runs"].keys() - runs.keys()):
                summary[arch], runs[arch] = old["summary"][arch], old["runs"][arch]
    print(f"\n{args.dataset} (sha256 {first['dataset']['sha256']}), seeds {args.seeds}")
    header = (
        "| model | " + " | ".join(f"{g} NDCG@10" for g in GROUPS) + " | HR@10 | wall s | peak MB |"
    )
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    for arch, s in summary.items():
        cells = [f"{s[g]['NDCG@10']['mean']:.4f} ± {s[g]['NDCG@10']['std']:.4f}" for g in GROUPS]
        hr = s["overall"]["HR@10"]
        print(
            f"| {arch} | " + " | ".join(cells) + f" | {hr['mean']:.4f} ± {hr['std']:.4f}"
            f" | {s['wall_s']['mean']:.0f} | {s['peak_rss_mb']['mean']:.0f} |"
        )
    if "sasrec" in summary and "bert4rec" in summary:
        ratio = (
            summary["bert4rec"]["overall"]["NDCG@10"]["mean"]
            / summary["sasrec"]["overall"]["NDCG@10"]["mean"]
        )
        print(f"\nBERT4Rec / SASRec NDCG@10: {ratio:.3f}")
        summary["bert4rec_over_sasrec_ndcg10"] = ratio

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "dataset": first["dataset"],
                "seeds": args.seeds,
                "machine": host(),
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
