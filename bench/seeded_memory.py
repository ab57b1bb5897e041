"""Time and memory to build every seeded query of a large dataset (`extractor.run.load_seeded`).

Writes an ML-1M-sized interaction file with the project's synthetic generator (6,040 users,
3,706 items, mean history 165 as in ML-1M; heavy-tailed lengths, Zipf popularity), then builds
every prefix of every user's training history in a fresh child process, timing it and measuring
the most memory it held (tracemalloc). Every prefix as a Python list would hold sum(n^2)/2
ids; the queries are ranges of one id array.

    python bench/seeded_memory.py --json bench/results/seeded_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from host import host

from seqrec.data.synthetic import generate_synthetic

CHILD_FLAG = "--child"


def write_interactions(
    path: Path, users: int, items: int, mean: float, seed: int
) -> dict[str, Any]:
    """A CSV of `generate_synthetic`'s interactions; what it holds, for the record."""
    frame = generate_synthetic(users, items, mean_length=mean, seed=seed)
    frame.to_csv(path, index=False)
    lengths = frame.groupby("user").size().to_numpy().astype(np.float64)
    return {
        "users": users,
        "items": items,
        "interactions": len(frame),
        "mean_length": float(lengths.mean()),
        "longest": int(lengths.max()),
        "ids_as_lists": int((lengths * (lengths + 1) / 2).sum()),
    }


def child(dataset: str) -> None:
    """Load the dataset, then build its queries twice: timed, then under tracemalloc for the
    most memory the build held at once (the dataset's own loading peaks higher, so the
    process's peak RSS would not show it). One line of JSON."""
    from extractor.config import ExtractConfig
    from extractor.run import load_seeded
    from seqrec.data.loading import load_dataset

    load_dataset(dataset)  # processed and cached, as a second extraction finds it
    config = ExtractConfig(
        teacher_url="http://unused", api_key="unused", budget=1, out=Path("unused"), dataset=dataset
    )
    start = time.perf_counter()
    queries = load_seeded(config)
    seconds = time.perf_counter() - start
    del queries
    tracemalloc.start()
    queries = load_seeded(config)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"queries": len(queries), "seconds": seconds, "peak_mb": peak / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=3706)
    parser.add_argument("--mean-length", type=float, default=165.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data", type=Path, help="keep the interaction file here (e.g. to extract)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-seeded-") as scratch:
        interactions = args.data or Path(scratch) / "interactions.csv"
        data = write_interactions(interactions, args.users, args.items, args.mean_length, args.seed)
        runs = []
        for _ in range(args.repeats):
            done = subprocess.run(
                [sys.executable, __file__, CHILD_FLAG, str(interactions)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(done.stdout.splitlines()[-1]))
            print(
                f"{runs[-1]['queries']} queries in {runs[-1]['seconds']:.3f} s, at most "
                f"{runs[-1]['peak_mb']:.0f} MB held while building them",
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
