"""The whole service end to end, over HTTP only: a key, a job, its student and its report.

The teacher runs in a thread; the API (`recmimic serve --no-worker`) and a worker
(`recmimic worker`) are processes sharing a database: SQLite with the embedded cache, and
PostgreSQL with Redis when both answer locally. The embedded default (`recmimic serve` alone)
runs a job too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from backends import REDIS_URL, needs_pg, needs_redis
from cryptography.fernet import Fernet
from service_stack import (
    DATASET,
    TEACHER_KEYS,
    Service,
    free_port,
    job_request,
    teacher,
    usage,
    wait_for,
)
from test_service_store import pg_url  # noqa: F401  (a fixture)

from service.keys import create_key


@pytest.fixture(scope="module")
def teacher_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with teacher(tmp_path_factory.mktemp("teacher") / "model") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql+redis", marks=[needs_pg, needs_redis])])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {
        "database_url": request.getfixturevalue("pg_url"),
        "redis_url": REDIS_URL,
        "encryption_key": Fernet.generate_key().decode(),  # required with PostgreSQL
    }


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def follow(api: httpx.Client, job_id: str, timeout_s: float = 90) -> dict[str, Any]:
    """The job once it has ended."""

    def ended() -> dict[str, Any] | None:
        job = api.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("done", "failed", "cancelled") else None

    return wait_for(ended, timeout_s, f"job {job_id} to end", every_s=0.3)


def test_a_job_becomes_a_student_with_a_report(
    backend: dict[str, str], teacher_url: str, tmp_path: Path
) -> None:
    service = Service(tmp_path / "home", **backend)
    try:
        service.start("worker")  # boots while the API does
        url = service.api()
        alice, bob = (create_key(service.store.sessions, tenant) for tenant in ("alice", "bob"))
        key = TEACHER_KEYS[3] if not backend else TEACHER_KEYS[4]
        with client(url, alice) as api, client(url, bob) as other:
            created = api.post("/v1/jobs", json=job_request(teacher_url, key, dataset=DATASET))
            assert created.status_code == 201, created.text
            job = follow(api, created.json()["id"])
            assert job["status"] == "done", (job["error"], service.logs())
            evaluation = job["metrics"]["evaluation"]
            assert job["paid"] == usage(teacher_url, key)
            assert job["paid"] == job["metrics"]["probing"]["spent_total"] + evaluation["paid"]
            assert 0 <= evaluation["agreement"]["agr10"] <= 1

            student_id = job["student_id"]
            assert [s["id"] for s in api.get("/v1/students").json()["items"]] == [student_id]
            answer = api.post(
                f"/v1/students/{student_id}/recommend", json={"history": ["1", "2"], "k": 5}
            )
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            assert len(items) == 5 and not {"1", "2"} & set(items)
            report = api.get(f"/v1/students/{student_id}/report")
            assert report.status_code == 200 and report.json()["dataset"]["name"] == DATASET

            # What the worker made belongs to the job's tenant only.
            assert other.get(f"/v1/jobs/{job['id']}").status_code == 404
            assert other.get(f"/v1/students/{student_id}").status_code == 404
            assert other.get("/v1/students").json()["items"] == []
    finally:
        service.stop()


def test_serve_alone_runs_the_api_and_a_worker(teacher_url: str, tmp_path: Path) -> None:
    service = Service(tmp_path / "home")
    try:
        port = free_port()
        service.start("serve", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        key = create_key(service.store.sessions, "carol")
        wait_for(lambda: _answers(url), 60, "the API")
        with client(url, key) as api:
            body = job_request(teacher_url, TEACHER_KEYS[5], epochs=1)
            job = follow(api, api.post("/v1/jobs", json=body).json()["id"])
            assert job["status"] == "done", (job["error"], service.logs())
            assert job["metrics"]["training"]["epochs_run"] == 1
            report = api.get(f"/v1/students/{job['student_id']}/report")
            assert report.status_code == 404  # no dataset named: nothing to evaluate on
        assert (service.home / "jobs" / job["id"] / "probes" / "answers.sqlite3").is_file()
    finally:
        service.stop()


def test_a_job_speaks_the_api_its_profile_names(tmp_path: Path) -> None:
    """A job with `profile: open-inference` against a black box that speaks only that: probing
    and evaluation both go through it, the model version comes from the answers' bodies, and
    the job's paid count is the teacher's bill."""
    service = Service(tmp_path / "home")
    try:
        url = service.api()
        service.start("worker")
        key = create_key(service.store.sessions, "dana")
        with (
            teacher(tmp_path / "model", wire="open-inference") as teacher_url,
            client(url, key) as api,
        ):
            body = job_request(teacher_url, TEACHER_KEYS[2], dataset=DATASET, epochs=1)
            data_free = api.post("/v1/jobs", json={**body, "profile": "open-inference"})
            assert data_free.status_code == 422 and "lists none" in data_free.json()["detail"]
            body["source"], body["prefixes"] = "seeded", 2
            created = api.post("/v1/jobs", json={**body, "profile": "open-inference"})
            assert created.status_code == 201, created.text
            assert created.json()["request"]["profile"] == "open-inference"
            job = follow(api, created.json()["id"])
            assert job["status"] == "done", (job["error"], service.logs())
            assert job["paid"] == usage(teacher_url, TEACHER_KEYS[2])
            assert job["metrics"]["probing"]["model_tag"]  # named in the answers' bodies
            refused = api.post("/v1/jobs", json={**body, "profile": "personalize"})
            assert refused.status_code == 422
            assert "body.profile: no built-in API profile" in refused.json()["detail"]
    finally:
        service.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False
