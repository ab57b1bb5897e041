"""Extraction and distillation at scale: every ML-100k prefix, three scales, wall time and memory.

One run, each stage a separate `recmimic` process, as a user runs them, against a real teacher
(`recmimic teacher serve` under uvicorn, 2 workers, loopback):

1. `recmimic extract --source seeded --prefixes all` with a budget above what the run needs
   (97,401 queries at scales 1, 0.5 and 0.25 make 283,549 distinct histories on ML-100k);
2. `recmimic distill` on that probe set for `--max-epochs` epochs.

For each stage: wall time and the process's own peak RSS (`os.wait4`), plus what the stage
wrote about itself (`summary.json`, `distill.json`). The teacher is an untrained SASRec the size
of ML-100k unless `--model` names an artifact: the cost of extracting and training is what is
measured here, not the student's quality (see bench/leakage.py for that).

    python bench/scale.py --json bench/results/scale.json [--max-epochs 1] [--prefixes all]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from extract import build_teacher, teacher
from host import host

ROOT = Path(__file__).resolve().parent.parent


def run_stage(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One `recmimic` command in a child process: its wall time and its own peak RSS (exits
    with the child's error output if it fails)."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert child.stderr is not None
    errors = child.stderr.read()  # drained while it runs, so a full pipe never blocks it
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"recmimic {args[0]} failed ({child.returncode}):\n{errors.decode()[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", type=Path, help="teacher artifact (default: untrained SASRec)")
    parser.add_argument("--prefixes", default="all", help="prefixes per user, or 'all'")
    parser.add_argument("--scales", default="1,0.5,0.25")
    parser.add_argument("--budget", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from seqrec.data.loading import load_dataset

    data = load_dataset(args.dataset)
    key = secrets.token_urlsafe(24)
    env = {**os.environ, "RECMIMIC_API_KEY": key}
    results: dict[str, Any] = {
        "dataset": data.card(),
        "seed": args.seed,
        "settings": {name: value for name, value in vars(args).items() if name != "json"},
        "machine": host(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch_name:
        scratch = Path(scratch_name)
        model = args.model or build_teacher(data, scratch / "teacher", args.seed)
        probes, student = scratch / "probes", scratch / "student"
        with teacher(model, 2, key, scratch / "teacher.log") as server:
            extract_args = ["extract", "--teacher-url", server.url, "--budget", str(args.budget)]
            extract_args += ["--source", "seeded", "--dataset", args.dataset]
            extract_args += ["--prefixes", args.prefixes, "--scales", args.scales]
            extract_args += ["--concurrency", str(args.concurrency), "--seed", str(args.seed)]
            extract_args += ["--out", str(probes), "--no-progress"]
            extracted = run_stage(extract_args, env)
        summary = json.loads((probes / "summary.json").read_text())
        extracted.update({name: summary[name] for name in ("paid", "cached", "failed")})
        extracted["queries"] = summary["queries_written"]
        print(f"extract: {extracted}", flush=True)

        distill_args = ["distill", "--probes", str(probes), "--out", str(student)]
        distill_args += ["--max-epochs", str(args.max_epochs), "--seed", str(args.seed)]
        distilled = run_stage([*distill_args, "--no-progress"], env)
        report = json.loads((student / "distill.json").read_text())
        distilled.update(
            examples=report["examples"],
            queries=report["queries"],
            epochs_run=report["epochs_run"],
            heldout=report["heldout"],
        )
        print(f"distill: {distilled}", flush=True)
    results.update(extract=extracted, distill=distilled, load_average_at_end=os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")  # --model: a Path
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
