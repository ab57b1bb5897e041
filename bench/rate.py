"""Keeping a rate-limited black box busy without a storm of refusals (extractor/pacing.py).

The mock teacher answers after 50 ms and allows 200 requests per second per key (a token bucket
of one second's burst); the client asks single histories (no batch route), 32 in flight, for
`--seconds` of requests at that rate. Three clients, each against a fresh teacher:

- `known`: the API's limit given (`--rate 200`, or a profile's `limits.rate`);
- `found`: no limit given, the pace found from the 429s (additive increase, multiplicative
  decrease);
- `hold only`: what the client did before pacing: every request waits out `Retry-After` after
  a 429, then all of them go again.

    python bench/rate.py --json bench/results/rate.json

Reports answered requests per second over the run and the share of requests answered 429.
Target (issue 22): at least 190 requests/s over 20 s or more, at most 1% of requests 429.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402
from host import host  # noqa: E402
from tiny_teacher import save_tiny_teacher  # noqa: E402

from extractor import pacing  # noqa: E402
from extractor.client import BlackBoxClient, ClientConfig  # noqa: E402
from extractor.tasks import run_event_loop  # noqa: E402

KEY = "rate-bench"
ITEMS = [str(i) for i in range(1, 501)]
RATE, LATENCY_MS, CONCURRENCY = 200.0, 50.0, 32


TEACHER = """
import sys, uvicorn
from collections import Counter
from fastapi import Request
from teacher_mock.app import create_app
from teacher_mock.settings import TeacherSettings
statuses = Counter()
model, key, rate, latency, port = sys.argv[1:6]
settings = TeacherSettings(
    model_dir=model, api_keys=[key], rate=float(rate), latency_ms=float(latency)
)
app = create_app(settings)
@app.middleware("http")
async def count(request: Request, call_next):
    response = await call_next(request)
    if request.url.path.startswith("/v1/recommend"):
        statuses[response.status_code] += 1
    return response
@app.get("/bench/statuses")
async def report():
    return {str(code): n for code, n in statuses.items()}
uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
"""


def teacher_process(model: Path, port: int) -> subprocess.Popen[bytes]:
    """The mock teacher in a process of its own, counting what it answered by status."""
    args = [str(model), KEY, str(RATE), str(LATENCY_MS), str(port)]
    process = subprocess.Popen([sys.executable, "-c", TEACHER, *args])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the teacher did not start")


def one_run(model: Path, mode: str, seconds: float, port: int) -> dict[str, Any]:
    rng = random.Random(0)
    histories = [rng.sample(ITEMS, rng.randint(1, 20)) for _ in range(int(RATE * seconds))]
    url = f"http://127.0.0.1:{port}"
    config = ClientConfig(
        base_url=url,
        api_key=KEY,
        max_concurrency=CONCURRENCY,
        batch=False,
        rate=RATE if mode == "known" else None,
        max_rate_limited=10_000,
    )
    refused = pacing.Pacer.refused
    if mode == "hold only":
        pacing.Pacer.refused = lambda self: None  # type: ignore[method-assign]
    teacher = teacher_process(model, port)
    try:

        async def ask() -> float:
            async with BlackBoxClient(config) as client:
                started = time.monotonic()
                outcomes = await client.recommend_many(histories, 10)
                assert all(outcome.ok for outcome in outcomes)
                return time.monotonic() - started

        wall = run_event_loop(ask())
        statuses = {int(k): v for k, v in httpx.get(f"{url}/bench/statuses").json().items()}
    finally:
        pacing.Pacer.refused = refused  # type: ignore[method-assign]
        teacher.terminate()
        teacher.wait(30)
    sent = sum(statuses.values())
    answered, limited = statuses.get(200, 0), statuses.get(429, 0)
    return {
        "mode": mode,
        "answered": answered,
        "wall_s": round(wall, 2),
        "answered_per_s": round(answered / wall, 1),
        "requests": sent,
        "refused_429": limited,
        "share_429": round(limited / sent, 4) if sent else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=22.0, help="of requests at the limit")
    parser.add_argument("--modes", default="known,found,hold only")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--port", type=int, default=18777, help="the teacher's loopback port")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny_teacher(Path(tmp) / "model", ITEMS)
        runs = [one_run(model, mode, args.seconds, args.port) for mode in args.modes.split(",")]
    for run in runs:
        print(json.dumps(run))
    result = {
        "command": "python bench/rate.py " + " ".join(sys.argv[1:]),
        "teacher": {"rate_per_s": RATE, "latency_ms": LATENCY_MS},
        "client": {"concurrency": CONCURRENCY, "single_requests": True},
        "runs": runs,
        "machine": host(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
