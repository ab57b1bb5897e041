"""Time and memory to build every seeded query of a large dataset (`extractor.run.load_seeded`).

Writes an ML-1M-shaped ratings file (users' history lengths log-normal, mean about 150, capped
at ML-1M's longest, 2,314; items drawn uniformly), then builds every prefix of every user's
training history in a fresh child process, timing it and reading the peak RSS it added. Every
prefix as a Python list would hold sum(n^2)/2 ids; the queries are ranges of one id array.

    python bench/seeded_memory.py --json bench/results/seeded_memory.json
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
from typing import Any

import numpy as np
from host import host

CHILD_FLAG = "--child"
LONGEST = 2314  # ML-1M's longest user history


def write_ratings(path: Path, users: int, items: int, seed: int) -> dict[str, Any]:
    """An ML-1M-format file (`user::item::rating::timestamp`); what it holds, for the record."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(4.5, 1.0, users)), 20, min(LONGEST, items))
    lengths = lengths.astype(np.int64)
    with path.open("w") as out:
        for user, n in enumerate(lengths.tolist(), start=1):
            picked = rng.choice(items, size=n, replace=False) + 1
            out.writelines(f"{user}::{item}::5::{978300000 + t}\n" for t, item in enumerate(picked))
    return {
        "users": users,
        "items": items,
        "ratings": int(lengths.sum()),
        "mean_length": float(lengths.mean()),
        "longest": int(lengths.max()),
        "ids_as_lists": int((lengths.astype(np.float64) * (lengths + 1) / 2).sum()),
    }


def child(dataset: str) -> None:
    """Load the dataset (not timed), then build its queries: one line of JSON."""
    from extractor.config import ExtractConfig
    from extractor.run import load_seeded
    from seqrec.data.loading import load_dataset

    load_dataset(dataset)  # processed and cached, as a second extraction finds it
    config = ExtractConfig(
        teacher_url="http://unused", api_key="unused", budget=1, out=Path("unused"), dataset=dataset
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    queries = load_seeded(config)
    seconds = time.perf_counter() - start
    added_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(
        json.dumps(
            {"queries": len(queries), "seconds": seconds, "peak_rss_added_mb": added_kb / 1024}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-seeded-") as scratch:
        ratings = Path(scratch) / "ratings.dat"
        data = write_ratings(ratings, args.users, args.items, args.seed)
        runs = []
        for _ in range(args.repeats):
            done = subprocess.run(
                [sys.executable, __file__, CHILD_FLAG, str(ratings)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout.splitlines()[-1]))
            print(
                f"{runs[-1]['queries']} queries in {runs[-1]['seconds']:.3f} s, peak RSS "
                f"+{runs[-1]['peak_rss_added_mb']:.0f} MB",
                flush=True,
            )
    result = {"data": data, "seed": args.seed, "machine": host(), "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_FLAG:
        child(sys.argv[2])
    else:
        main()
