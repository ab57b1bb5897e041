"""The stateful fuzzing of tests/test_stateful_fuzz.py, run long: more examples, longer runs.

    python bench/fuzz.py --examples 100 --steps 50 --json bench/results/fuzz.json

Each example is a fresh sequence of up to `--steps` calls against the live service (valid jobs
made, read, listed, cancelled, replayed, looked at by another tenant) and the live teacher
(valid and refused recommendations against its bill). Writes whether both machines passed,
their settings and the wall time; a failure's shrunk sequence is in the pytest output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from host import host

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100, help="sequences per machine")
    parser.add_argument("--steps", type=int, default=50, help="calls per sequence at most")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    env = {
        **os.environ,
        "RECMIMIC_FUZZ_EXAMPLES": str(args.examples),
        "RECMIMIC_FUZZ_STEPS": str(args.steps),
        "RECMIMIC_FUZZ_RANDOM": "1",  # new sequences each run (the suite's are fixed)
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["tests/test_stateful_fuzz.py", "--timeout", "0"]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    result = {
        "command": "python bench/fuzz.py " + " ".join(sys.argv[1:]),
        "examples_per_machine": args.examples,
        "steps_per_example": args.steps,
        "passed": done.returncode == 0,
        "summary": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "",
        "wall_s": round(wall, 1),
        "machine": host(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(done.stdout[-3000:])
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
