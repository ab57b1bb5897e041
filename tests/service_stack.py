"""A real service for worker tests: teachers in threads, the API and workers as processes.

The teacher is the tiny untrained SASRec of `tiny_teacher` over a small synthetic dataset's
catalogue, so a whole job (probing, a couple of epochs, evaluation) takes seconds. Leases are
short (2 s) so a killed worker's job is claimed again quickly.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tiny_teacher import save_tiny_teacher

from extractor.budget import Budget
from extractor.cache import EMBEDDED_FILENAME
from extractor.run import LEDGER_FILENAME
from seqrec.data.loading import load_dataset
from service.db.models import Job
from service.settings import ServiceSettings
from service.worker import open_store
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DATASET = "synthetic:120:50"
TEACHER_KEYS = [f"teacher-key-{i}-9c1e" for i in range(12)]
FAST = {"lease_s": "2", "heartbeat_s": "0.5", "cancel_check_s": "0.3", "poll_s": "0.3"}
LOCAL_TEACHERS = {"teacher_allow": "127.0.0.1"}  # the teachers run on loopback, refused by default
T = TypeVar("T")


def job_request(teacher_url: str, teacher_key: str, **changes: Any) -> dict[str, Any]:
    """A job that probes ~150 queries and trains two epochs."""
    return {
        "teacher_url": teacher_url,
        "teacher_api_key": teacher_key,
        "budget": 400,
        "n_sequences": 20,
        "k": 10,
        "epochs": 2,
        **changes,
    }


@contextmanager
def teacher(directory: Path, latency_ms: float = 0.0, wire: str = "recmimic") -> Iterator[str]:
    """The black box over the synthetic catalogue, in a thread, speaking `wire`; its URL."""
    if not directory.exists():
        save_tiny_teacher(directory, [str(i) for i in load_dataset(DATASET).item_ids])
    settings = TeacherSettings(
        model_dir=directory, api_keys=TEACHER_KEYS, latency_ms=latency_ms, wire=wire
    )
    with running(create_app(settings)) as url:
        yield url


def usage(teacher_url: str, key: str) -> int:
    """Histories the teacher answered (and billed) for this key."""
    answer = httpx.get(f"{teacher_url}/v1/usage", headers={"Authorization": f"Bearer {key}"})
    return answer.json()["used"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """The first truthy value `probe` returns; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Service:
    """One service home (database, jobs) and the processes started on it."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        variables = {"home": str(home), **FAST, **LOCAL_TEACHERS, **env}
        self.env = {**os.environ, **{f"RECMIMIC_{k.upper()}": v for k, v in variables.items()}}
        self.settings = ServiceSettings(**{k: v for k, v in variables.items()})
        self.store = open_store(self.settings)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """`recmimic ARGS` in a new process, its log in the home folder."""
        log = (self.home / f"process-{len(self.processes)}.log").open("wb")
        command = [sys.executable, "-m", "service.cli", *args]
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def api(self) -> str:
        """Start `recmimic serve --no-worker`; its URL once it is ready."""
        port = free_port()
        process = self.start("serve", "--no-worker", "--port", str(port))
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert process.poll() is None, "the API process died"
            try:
                return httpx.get(f"{url}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, "the API")
        return url

    def job(self, job_id: str) -> Job:
        with self.store.sessions() as session:
            job = session.get(Job, job_id)
        assert job is not None
        return job

    def wait_status(self, job_id: str, statuses: tuple[str, ...], timeout_s: float = 60) -> Job:
        def reached() -> Job | None:
            job = self.job(job_id)
            return job if job.status in statuses else None

        return wait_for(reached, timeout_s, f"job status in {statuses}")

    def owner(self, job_id: str) -> subprocess.Popen[bytes]:
        """The started process that holds the job's lease (worker ids are host:pid:random)."""
        owner = self.job(job_id).lease_owner
        assert owner is not None
        pid = int(owner.split(":")[1])
        return next(p for p in self.processes if p.pid == pid)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.store.sessions.kw["bind"].dispose()

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.home.glob("process-*.log")))


def ledger(probes: Path) -> tuple[int, int]:
    """(spent, answered) of a probe folder's budget ledger, over every run."""
    budget = Budget(0, probes / LEDGER_FILENAME)
    try:
        return budget.spent, budget.answered
    finally:
        budget.close()


def cached_answers(probes: Path) -> int:
    """Distinct histories the embedded cache holds an answer for."""
    with sqlite3.connect(probes / EMBEDDED_FILENAME) as db:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
