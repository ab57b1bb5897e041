"""Student serving latency: `POST /v1/students/{id}/recommend` under wrk, beside the bare model.

One run, no teacher:

(a) an untrained SASRec over the ML-100k catalogue at the default size (hidden 64, 2 blocks,
    max_len 50; serving cost does not depend on the weights) is registered as a student of a
    fresh service home (SQLite) through the store, as a worker would register it;
(b) `recmimic serve --no-worker` runs as a subprocess on a free port, once per `--api-workers`
    value (1 and 2 API processes), and `wrk` POSTs single requests (k=10, ML-100k user
    histories cut to 5-50 items) at 32 connections for 20 s after a short warm-up: p50 and p99
    latency, answered requests/s, and the server's CPU time per request (its processes' main
    threads, i.e. the event loops, apart from their other threads, i.e. the forward passes);
(c) for reference, the same model behind `recmimic teacher serve` (whose endpoint micro-batches
    concurrent requests into one forward pass) under the same wrk load at `/v1/recommend`;
(d) the same model ranks the same histories in this process with `seqrec.inference.top_k` in
    batches of 256 (servers stopped): histories/s, the ceiling the service is compared to.

Target: p99 < 50 ms at 32 connections, judged for each `--api-workers` value; the verdict that
counts is the service's default (`ServiceSettings.api_workers`, 1 API process), which after
`gc.freeze` had the lower p99 of the two on 2 cores in every paired run. The machine may be
shared: the load average is recorded at the start and at the end of each measured run; compare
runs only at similar load.

    python bench/service.py --json bench/results/service.json

Needs `wrk` on the PATH (Debian/Ubuntu: `apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from extract import ROOT, build_teacher, free_port, machine, teacher

LUA_SCRIPT = Path(__file__).resolve().parent / "wrk_student.lua"
TARGET_P99_MS = 50.0
TENANT = "bench"
STUDENT_FIELDS = ("arch", "n_items", "hidden", "n_blocks", "n_heads", "max_len")


def sample_histories(data: Any, n: int, low: int, high: int, seed: int) -> list[list[int]]:
    """Dense histories of `n` users (with repeats when n > users), each its first 5-50 items."""
    rng = np.random.default_rng(seed)
    users = rng.choice(data.n_users, size=n, replace=n > data.n_users)
    histories = []
    for user in users.tolist():
        items = data.sequences[user]
        length = int(rng.integers(low, min(high, len(items)) + 1))
        histories.append(items[:length].tolist())
    return histories


def register_student(model: Path) -> tuple[str, str]:
    """(student id, API key) in the configured service home, through the store like a worker."""
    from service.keys import create_key
    from service.settings import ServiceSettings
    from service.worker import open_store

    store = open_store(ServiceSettings())
    try:
        job, _ = store.create_job(TENANT, {"note": "bench/service.py"}, teacher_api_key="unused")
        worker = "bench-service"
        if store.claim_job(worker, lease_s=60) is None:
            raise RuntimeError("the fresh service home had no job to claim")
        student = store.finish_done(job.id, worker, metrics={}, artifact_path=str(model))
        if student is None:
            raise RuntimeError("the job was lost before its student was recorded")
        return student.id, create_key(store.sessions, TENANT)
    finally:
        store.sessions.kw["bind"].dispose()


def start_api(port: int, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`recmimic serve --no-worker` on loopback, logging to a file; returns once /readyz is 200."""
    command = [sys.executable, "-m", "service.cli", "serve", "--no-worker", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the API did not become ready; see {log_path}")


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of a process and its children: their main threads
    (`loop`) and all their other threads (`threads`), read from /proc."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    tick = os.sysconf("SC_CLK_TCK")
    spent = {"loop": 0.0, "threads": 0.0}
    for process in [pid, *map(int, children.split())]:
        for task in Path(f"/proc/{process}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # a thread that ended meanwhile
                continue
            part = "loop" if task.name == str(process) else "threads"
            spent[part] += (int(fields[11]) + int(fields[12])) / tick
    return spent


def run_wrk(
    url: str, path: str, connections: int, duration_s: int, threads: int, bodies: Path, key: str
) -> dict[str, Any]:
    """One wrk run; only 2xx/3xx answers count as answered, socket errors are kept apart."""
    env = {**os.environ, "WRK_BODIES": str(bodies), "WRK_API_KEY": key, "WRK_PATH": path}
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s"]
    command += ["-s", str(LUA_SCRIPT), url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    seconds = result["duration_us"] / 1e6
    errors = sum(result[n] for n in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    result.update(
        connections=connections,
        threads=threads,
        socket_errors=errors,
        answered_per_s=(result["requests"] - result["status_errors"]) / seconds,
        p50_ms=result["latency_p50_us"] / 1000,
        p99_ms=result["latency_p99_us"] / 1000,
        load_average_at_end=os.getloadavg(),
    )
    return result


def measure_service(
    args: argparse.Namespace, env: dict[str, str], bodies: Path, key: str, path: str, log: Path
) -> dict[str, Any]:
    """Start the API with `env`, check one answer, warm up, then one measured wrk run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_api(port, log, env)
    try:
        body = json.loads(bodies.read_text().splitlines()[0])
        for _ in range(int(env.get("RECMIMIC_API_WORKERS", "1"))):  # likely each process once
            answer = httpx.post(
                url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
            answer.raise_for_status()  # also loads the student before the clock starts
            if len(answer.json()["items"]) != args.k:
                raise RuntimeError(f"expected {args.k} items, got {answer.text}")
        run_wrk(url, path, args.connections, args.warmup, args.wrk_threads, bodies, key)
        load = os.getloadavg()
        before = cpu_seconds(server.pid)
        served = run_wrk(url, path, args.connections, args.duration, args.wrk_threads, bodies, key)
        after = cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    cpu_ms = {part: 1000 * (after[part] - before[part]) / served["requests"] for part in after}
    return {
        **served,
        "server_env": env,
        "load_average_at_start": load,
        "server_cpu_ms_per_request": cpu_ms,
        "api_log_lines": log.read_text().count("\n"),
    }


def in_process(model: Any, histories: list[list[int]], k: int, batch: int) -> dict[str, Any]:
    """Histories/s of `top_k` over the same histories, repeated for at least 5 s after a warm-up."""
    import torch

    from seqrec.data.sequences import Sequences
    from seqrec.inference import top_k

    sequences = Sequences.from_lists(histories)
    top_k(model, sequences, k, batch_size=batch)
    rounds, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < 5.0 or rounds < 3:
        top_k(model, sequences, k, batch_size=batch)
        rounds += 1
    return {
        "batch_size": batch,
        "rounds": rounds,
        "histories": rounds * len(histories),
        "seconds": elapsed,
        "histories_per_s": rounds * len(histories) / elapsed,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=20, help="seconds measured")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk before measuring")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--histories", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256, help="in-process batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--api-workers", nargs="+", type=int, default=[1, 2], help="RECMIMIC_API_WORKERS values"
    )
    parser.add_argument(
        "--server-env",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the API process (to try e.g. OMP_NUM_THREADS=1)",
    )
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: install it first (Debian/Ubuntu: apt-get install wrk)")

    # Run as a script, bench/ leads sys.path and this file would shadow the `service` package.
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-service-") as scratch_name:
        scratch = Path(scratch_name)
        # This process and the API read the same settings: a fresh SQLite home, nothing else.
        for name in [n for n in os.environ if n.startswith("RECMIMIC_") or n == "DATABASE_URL"]:
            del os.environ[name]
        os.environ.update(RECMIMIC_HOME=str(scratch / "home"), RECMIMIC_ENV_FILE=os.devnull)

        from seqrec.artifacts import load_artifact
        from seqrec.data.loading import load_dataset

        info = machine()
        data = load_dataset("ml-100k")
        model = build_teacher(data, scratch / "student", args.seed)
        dense = sample_histories(data, args.histories, 5, 50, args.seed)
        bodies = scratch / "bodies.jsonl"
        lines = [{"history": data.item_ids[np.asarray(h) - 1].tolist(), "k": args.k} for h in dense]
        bodies.write_text("".join(json.dumps(body) + "\n" for body in lines))
        lengths = np.array([len(h) for h in dense])
        student_id, key = register_student(model)
        path = f"/v1/students/{student_id}/recommend"
        served = {
            workers: measure_service(
                args,
                {**server_env, "RECMIMIC_API_WORKERS": str(workers)},
                bodies,
                key,
                path,
                scratch / f"api-{workers}.log",
            )
            for workers in args.api_workers
        }
        with teacher(model, 1, key, scratch / "teacher.log") as reference:
            run_wrk(reference.url, "/v1/recommend", args.connections, args.warmup, 1, bodies, key)
            micro_batched = run_wrk(
                reference.url, "/v1/recommend", args.connections, args.duration, 1, bodies, key
            )
        artifact = load_artifact(model)
        bare = in_process(artifact.model, dense, args.k, args.batch)

    config = artifact.info.model
    verdicts = {
        workers: run["p99_ms"] < TARGET_P99_MS and run["status_errors"] == 0
        for workers, run in served.items()
    }
    from service.settings import ServiceSettings

    default_workers = ServiceSettings.model_fields["api_workers"].default
    met = verdicts.get(default_workers, False)
    compared = served.get(default_workers, served[args.api_workers[-1]])
    ratio = compared["answered_per_s"] / bare["histories_per_s"]
    print(
        f"ml-100k histories: {len(dense)}, length mean {lengths.mean():.1f}"
        f" (min {lengths.min()}, max {lengths.max()}), k={args.k};"
        f" load average at start {info['load_average_at_start'][0]:.2f} on {info['cpus']} CPUs"
    )
    for workers, run in served.items():
        cpu = run["server_cpu_ms_per_request"]
        print(
            f"service, {workers} API process(es), {args.connections} connections,"
            f" {args.duration}s: {run['answered_per_s']:.0f} req/s, p50 {run['p50_ms']:.1f} ms,"
            f" p99 {run['p99_ms']:.1f} ms, non-2xx {run['status_errors']},"
            f" socket errors {run['socket_errors']}; server CPU per request: loop"
            f" {cpu['loop']:.2f} ms, other threads {cpu['threads']:.2f} ms;"
            f" load {run['load_average_at_start'][0]:.2f} -> {run['load_average_at_end'][0]:.2f}"
        )
    print(
        f"in process, batch {args.batch}: {bare['histories_per_s']:.0f} histories/s"
        f" ({bare['torch_threads']} torch threads); service / in-process {ratio:.3f}"
    )
    print(
        f"reference, the teacher's micro-batched endpoint: {micro_batched['answered_per_s']:.0f}"
        f" req/s, p50 {micro_batched['p50_ms']:.1f} ms, p99 {micro_batched['p99_ms']:.1f} ms"
    )
    for workers, ok in verdicts.items():
        default = " (the default)" if workers == default_workers else ""
        print(
            f"p99 < {TARGET_P99_MS:.0f} ms at {args.connections} connections,"
            f" {workers} API processes{default}: {'met' if ok else 'MISSED'}"
        )

    payload = {
        "dataset": data.card(),
        "machine": info,
        "settings": {name: value for name, value in vars(args).items() if name != "json"},
        "student": {
            "model": "untrained, ml-100k catalogue",
            **{name: getattr(config, name) for name in STUDENT_FIELDS},
        },
        "histories": {
            "count": len(dense),
            "length_mean": float(lengths.mean()),
            "length_min": int(lengths.min()),
            "length_max": int(lengths.max()),
        },
        "service": {f"api_workers_{workers}": run for workers, run in served.items()},
        "teacher_micro_batched": micro_batched,
        "in_process": bare,
        "service_over_in_process": ratio,
        "target": {
            "p99_ms_below": TARGET_P99_MS,
            "api_workers": default_workers,
            "met": met,
            "met_by_api_workers": verdicts,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
