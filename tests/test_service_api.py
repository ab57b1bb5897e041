"""The service's REST API over a real uvicorn server: auth, tenancy, jobs, students, errors.

One server per module on a free loopback port, over a SQLite database in a temporary home. The
student is a tiny saved artifact registered through the store the way a worker registers one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import delete
from tiny_teacher import save_tiny_teacher
from typer.testing import CliRunner

from extractor.profiles import load_profile
from seqrec.artifacts import Artifact, load_artifact
from seqrec.data.sequences import Sequences
from seqrec.inference import top_k
from service.api.app import create_app
from service.cli import app as cli_app
from service.db.models import ApiKey
from service.keys import create_key, key_digest
from service.settings import ServiceSettings
from service.store import JobStore
from teacher_mock.server import running

N_ITEMS, MAX_LEN = 30, 20
ITEM_IDS = [str(100 + i) for i in range(N_ITEMS)]
TEACHER_KEY = "teacher-secret-7f3a9c"  # distinctive, so a leak is easy to find
JOB = {"teacher_url": "http://teacher.example:8000", "teacher_api_key": TEACHER_KEY, "budget": 50}
LIMITS = {"max_budget": 1000, "max_history": 40, "max_batch": 8, "max_body_bytes": 65_536}


@dataclass
class Service:
    url: str
    store: JobStore
    alice: str  # API keys
    bob: str
    student_id: str
    artifact: Artifact

    def client(self, key: str | None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(key) if key else {}, timeout=10)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("service")
    app = create_app(ServiceSettings(home=home, **LIMITS))
    store: JobStore = app.state.store
    artifact_dir = save_tiny_teacher(home / "student", ITEM_IDS, MAX_LEN)
    report = home / "report.json"
    report.write_text(json.dumps({"dataset": "tiny", "agreement": {"Agr@10": 0.5}}))
    job, _ = store.create_job("alice", {"teacher_url": "http://t"}, "k")
    assert store.claim_job("test-worker", 60) is not None
    student = store.finish_done(
        job.id,
        "test-worker",
        metrics={"Agr@10": 0.5},
        artifact_path=str(artifact_dir),
        report_path=str(report),
    )
    alice, bob = create_key(store.sessions, "alice"), create_key(store.sessions, "bob")
    with running(app) as url:
        yield Service(url, store, alice, bob, student.id, load_artifact(artifact_dir))


@pytest.fixture
def alice(service: Service) -> Iterator[httpx.Client]:
    with service.client(service.alice) as client:
        yield client


@pytest.fixture
def bob(service: Service) -> Iterator[httpx.Client]:
    with service.client(service.bob) as client:
        yield client


def new_job(client: httpx.Client, **changes: Any) -> dict[str, Any]:
    answer = client.post("/v1/jobs", json={**JOB, **changes})
    assert answer.status_code == 201, answer.text
    return answer.json()


# --- probes and errors ----------------------------------------------------------------------


def test_probes_need_no_key(service: Service) -> None:
    with service.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json()["database"] == "ok"
        assert client.get("/docs").status_code == 200
        assert "/v1/jobs" in client.get("/openapi.json").json()["paths"]


def test_metrics_count_requests_by_route_and_jobs_by_status(
    service: Service, alice: httpx.Client
) -> None:
    alice.get(f"/v1/jobs/{'x' * 8}")
    text = httpx.get(f"{service.url}/metrics").text
    assert 'recmimic_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in (
        text
    )
    assert 'recmimic_jobs{status="done"}' in text


def test_readyz_checks_redis_when_configured(service: Service, tmp_path: Path) -> None:
    down = ServiceSettings(home=tmp_path, redis_url="redis://127.0.0.1:1/0")
    with running(create_app(down, service.store)) as url:
        answer = httpx.get(f"{url}/readyz")
    assert answer.status_code == 503 and "Redis" in answer.json()["detail"]
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis server answers at 127.0.0.1:6379")
    up = ServiceSettings(home=tmp_path, redis_url="redis://127.0.0.1:6379/0")
    with running(create_app(up, service.store)) as url:
        assert httpx.get(f"{url}/readyz").json()["cache"] == "redis"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}],
    ids=["missing", "wrong", "not-bearer"],
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/some-id"),
        ("POST", "/v1/jobs/some-id/cancel"),
        ("GET", "/v1/students"),
        ("POST", "/v1/students/some-id/recommend"),
    ],
)
def test_every_api_route_needs_a_key(
    service: Service, headers: dict[str, str], method: str, path: str
) -> None:
    body = {"history": ["100"], "k": 5} if "recommend" in path else JOB
    answer = httpx.request(method, service.url + path, headers=headers, json=body)
    assert answer.status_code == 401
    assert "API key" in answer.json()["detail"]
    assert answer.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}], ids=["missing", "wrong"]
)
@pytest.mark.parametrize(
    "path", ["/v1/jobs", "/v1/students/{id}/recommend", "/v1/students/{id}/recommend/batch"]
)
@pytest.mark.parametrize(
    "content,refused",
    [(b"{not json", 422), (b'{"k": "many"}', 422), (b"[" + b" " * 70_000 + b"]", 413)],
    ids=["malformed", "schema-invalid", "too-large"],
)
def test_no_valid_key_is_401_whatever_the_body(
    service: Service, headers: dict[str, str], path: str, content: bytes, refused: int
) -> None:
    url = service.url + path.format(id=service.student_id)
    json_type = {"Content-Type": "application/json"}
    with_key = httpx.post(url, content=content, headers={**json_type, **bearer(service.alice)})
    assert with_key.status_code == refused  # the body alone is refused...
    answer = httpx.post(url, content=content, headers={**json_type, **headers})
    assert answer.status_code == 401, answer.text  # ...but the missing key is said first
    assert "API key" in answer.json()["detail"]


def test_no_valid_key_is_401_whatever_the_parameters(service: Service) -> None:
    for path in ("/v1/jobs?limit=0", "/v1/students?offset=-1"):
        assert httpx.get(service.url + path, headers=bearer(service.alice)).status_code == 422
        assert httpx.get(service.url + path).status_code == 401


def test_unknown_routes_methods_and_large_bodies_answer_json(alice: httpx.Client) -> None:
    missing = alice.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong_method = alice.delete("/v1/jobs")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()
    huge = alice.post("/v1/jobs", content=b"{" + b" " * 70_000 + b"}")
    assert huge.status_code == 413 and "limit of 65536 bytes" in huge.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b" " * 4096

    streamed = alice.post(
        "/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and "exceeds the limit" in streamed.json()["detail"]


# --- jobs -----------------------------------------------------------------------------------


def test_create_returns_the_job_without_the_teacher_key(alice: httpx.Client) -> None:
    job = new_job(alice, source="seeded", dataset="ml-100k", scales=[1, 0.5])
    assert job["status"] == "queued" and job["progress"] == 0 and job["paid"] == 0
    assert job["request"]["dataset"] == "ml-100k" and job["request"]["budget"] == 50
    assert "teacher_api_key" not in job["request"] and TEACHER_KEY not in json.dumps(job)
    assert alice.get(f"/v1/jobs/{job['id']}").json() == job
    assert job["id"] in [j["id"] for j in alice.get("/v1/jobs").json()["items"]]


def test_idempotency_key(alice: httpx.Client) -> None:
    headers = {"Idempotency-Key": "create-once"}
    first = alice.post("/v1/jobs", json=JOB, headers=headers)
    replay = alice.post("/v1/jobs", json=JOB, headers=headers)
    assert first.status_code == 201 and replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    conflict = alice.post("/v1/jobs", json={**JOB, "budget": 51}, headers=headers)
    assert conflict.status_code == 409 and "create-once" in conflict.json()["detail"]


def test_list_pages_and_filters(alice: httpx.Client) -> None:
    for seed in range(3):
        new_job(alice, seed=seed)
    page = alice.get("/v1/jobs", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next_offset"] == 2
    done = alice.get("/v1/jobs", params={"status": "done"}).json()["items"]
    assert [job["status"] for job in done] == ["done"]


def test_cancel_a_queued_job(alice: httpx.Client) -> None:
    job = new_job(alice)
    cancelled = alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    done = alice.get("/v1/jobs", params={"status": "done"}).json()["items"][0]
    refused = alice.post(f"/v1/jobs/{done['id']}/cancel")
    assert refused.status_code == 409 and "already finished" in refused.json()["detail"]


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"teacher_url": "ftp://teacher"}, "body.teacher_url: must be an http:// or https:// URL"),
        ({"budget": 0}, "body.budget: Input should be greater than or equal to 1"),
        ({"budget": 1e3}, "body.budget: Input should be a valid integer"),
        ({"budget": True}, "body.budget: Input should be a valid integer"),
        ({"budget": "100"}, "body.budget: Input should be a valid integer"),
        ({"budget": 1001}, "body.budget: at most 1000, got 1001"),
        ({"k": 101}, "body.k: at most 100, got 101"),
        ({"evaluation_budget": 50}, "evaluation_budget needs a dataset"),
        ({"dataset": "ml-100k", "evaluation_budget": 1e3}, "body.evaluation_budget: Input should"),
        ({"dataset": "ml-100k", "evaluation_budget": 1001}, "body.evaluation_budget: at most"),
        ({"source": "seeded"}, "the seeded source needs a dataset"),
        ({"max_history": 50}, "max_history applies to the seeded source"),
        ({"source": "seeded", "dataset": "ml-100k", "max_history": 0}, "body.max_history"),
        ({"scales": [0.5]}, "body.scales: must include 1"),
        ({"dataset": "../etc/passwd"}, "body.dataset: String should match pattern"),
        ({"backbone": "gru"}, "body.backbone: Input should be 'sasrec' or 'bert4rec'"),
        ({"experts": 1}, "body.experts: must be 0 (off) or at least 2"),
        ({"surprise": 1}, "body.surprise: Extra inputs are not permitted"),
        ({"teacher_api_key": ""}, "body.teacher_api_key: must be 1 to 4096 characters"),
        ({"strategy": "greedy"}, "body.strategy: Input should be 'oneshot' or 'adaptive'"),
        ({"adaptive": {"rounds": 3}}, "adaptive settings need strategy 'adaptive'"),
        ({"strategy": "adaptive", "adaptive": {"first_share": 0}}, "body.adaptive.first_share"),
        ({"strategy": "adaptive", "adaptive": {"score": "loud"}}, "body.adaptive.score"),
        ({"strategy": "adaptive", "adaptive": {"pool": 5}}, "body.adaptive.pool: Extra inputs"),
        (
            {"strategy": "adaptive", "adaptive": {"score": "neighbour"}},
            "the neighbour score compares the student with paid answers",
        ),
    ],
)
def test_job_validation_messages(
    alice: httpx.Client, changes: dict[str, Any], message: str
) -> None:
    answer = alice.post("/v1/jobs", json={**JOB, **changes})
    assert answer.status_code == 422
    assert message in answer.json()["detail"]
    assert TEACHER_KEY not in answer.text


def test_malformed_json_is_a_422(alice: httpx.Client) -> None:
    answer = alice.post(
        "/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422 and "JSON" in answer.json()["detail"]


# --- tenancy --------------------------------------------------------------------------------


def test_tenants_never_see_each_other(
    service: Service, alice: httpx.Client, bob: httpx.Client
) -> None:
    job = new_job(alice)
    student = service.student_id
    routes = [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("GET", f"/v1/students/{student}"),
        ("GET", f"/v1/students/{student}/report"),
    ]
    for method, path in routes:
        answer = bob.request(method, path)
        assert answer.status_code == 404 and answer.json()["detail"].startswith("no ")
    for path in (f"/v1/students/{student}/recommend", f"/v1/students/{student}/recommend/batch"):
        body = {"histories": [["100"]]} if path.endswith("batch") else {"history": ["100"]}
        assert bob.post(path, json=body).status_code == 404
    assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["items"]]
    assert bob.get("/v1/students").json()["items"] == []
    assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"  # bob's cancel: no-op
    for method, path in routes:
        assert alice.request(method, path).status_code == 200


def test_cached_owner_never_serves_another_tenant(service: Service) -> None:
    """Alice's lookups are cached once she is answered; Bob's key still finds nothing."""
    path = f"/v1/students/{service.student_id}/recommend"
    body = {"history": ["100", "101"], "k": 3}
    with service.client(service.alice) as alice, service.client(service.bob) as bob:
        for _ in range(2):
            assert alice.post(path, json=body).status_code == 200
            refused = bob.post(path, json=body)
            assert refused.status_code == 404 and refused.json()["detail"].startswith("no ")
            assert bob.post(f"{path}/batch", json={"histories": [["100"]]}).status_code == 404


def test_a_deleted_key_is_refused_once_its_cache_entry_expires(tmp_path: Path) -> None:
    """Keys are cached `lookup_cache_s`; deleting the row revokes the key within that bound."""
    app = create_app(ServiceSettings(home=tmp_path, lookup_cache_s=0.5))
    store: JobStore = app.state.store
    key = create_key(store.sessions, "carol")
    with running(app) as url, httpx.Client(base_url=url) as client:
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200
        with store.sessions.begin() as session:
            session.execute(delete(ApiKey).where(ApiKey.key_sha256 == key_digest(key)))
        time.sleep(0.6)
        refused = client.get("/v1/jobs", headers=headers)
        assert refused.status_code == 401 and refused.json()["detail"] == "invalid API key"
        wrong = {"Authorization": f"Bearer {key}x"}
        for _ in range(2):  # refusals are not cached: each is looked up and refused again
            assert client.get("/v1/jobs", headers=wrong).status_code == 401


# --- students -------------------------------------------------------------------------------


def expected(artifact: Artifact, histories: list[list[str]], k: int) -> list[list[str]]:
    dense = {raw: i for i, raw in enumerate(ITEM_IDS, start=1)}
    seqs = Sequences.from_lists([[dense[item] for item in h] for h in histories])
    return [[ITEM_IDS[i - 1] for i in row if i] for row in top_k(artifact.model, seqs, k).tolist()]


def test_student_listing_and_report(service: Service, alice: httpx.Client) -> None:
    (student,) = alice.get("/v1/students").json()["items"]
    assert student["id"] == service.student_id and student["metrics"] == {"Agr@10": 0.5}
    assert alice.get(f"/v1/students/{service.student_id}").json() == student
    report = alice.get(f"/v1/students/{service.student_id}/report")
    assert report.json()["agreement"] == {"Agr@10": 0.5}


def test_student_answers_the_teacher_contract(service: Service, alice: httpx.Client) -> None:
    rng = random.Random(0)
    histories = [[rng.choice(ITEM_IDS) for _ in range(rng.randint(1, 25))] for _ in range(8)]
    path = f"/v1/students/{service.student_id}/recommend"
    singles = []
    for history in histories:
        answer = alice.post(path, json={"history": history, "k": 10})
        assert answer.status_code == 200
        assert answer.headers["x-model-version"] == service.artifact.version
        assert list(answer.json()) == ["items"]
        singles.append(answer.json()["items"])
    batch = alice.post(f"{path}/batch", json={"histories": histories, "k": 10}).json()
    assert [result["items"] for result in batch["results"]] == singles
    assert singles == expected(service.artifact, histories, 10)
    for history, items in zip(histories, singles, strict=True):
        assert not set(items) & set(history) and len(items) == len(set(items))
    numbers = alice.post(path, json={"history": [100, 101], "k": 3})  # ints read as raw ids
    assert numbers.json()["items"] == expected(service.artifact, [["100", "101"]], 3)[0]


def test_concurrent_requests_get_the_sequential_answers(
    service: Service, alice: httpx.Client
) -> None:
    """Requests micro-batched together (mixed k, a batch among singles) answer as if alone."""
    rng = random.Random(1)
    histories = [[rng.choice(ITEM_IDS) for _ in range(rng.randint(1, 25))] for _ in range(20)]
    ks = [3 + i % 8 for i in range(len(histories))]
    path = f"/v1/students/{service.student_id}/recommend"
    bodies = [{"history": h, "k": k} for h, k in zip(histories, ks, strict=True)]
    sequential = [alice.post(path, json=body).json()["items"] for body in bodies]

    async def at_once() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {service.alice}"}
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10) as client:
            batch = client.post(f"{path}/batch", json={"histories": histories[:8], "k": 10})
            return await asyncio.gather(batch, *(client.post(path, json=b) for b in bodies))

    batch, *singles = asyncio.run(at_once())
    for answer in (batch, *singles):
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == service.artifact.version
    assert [answer.json()["items"] for answer in singles] == sequential
    assert sequential == [
        expected(service.artifact, [h], k)[0] for h, k in zip(histories, ks, strict=True)
    ]
    batched = [result["items"] for result in batch.json()["results"]]
    assert batched == expected(service.artifact, histories[:8], 10)


@pytest.mark.parametrize(
    "body,message",
    [
        ({"history": ["100", "nope"], "k": 5}, "history: unknown item ids 'nope'"),
        ({"history": [], "k": 5}, "history is empty"),
        ({"history": ["100"], "k": 31}, "k must be between 1 and 30, got 31"),
        ({"history": ["100"] * 41, "k": 5}, "history has 41 items; at most 40"),
        ({"history": ["100"], "k": "5"}, "body.k: Input should be a valid integer"),
        ({"history": [True]}, "item ids must be strings (or integers)"),
    ],
)
def test_student_refusals_match_the_teacher(
    service: Service, alice: httpx.Client, body: dict[str, Any], message: str
) -> None:
    answer = alice.post(f"/v1/students/{service.student_id}/recommend", json=body)
    assert answer.status_code == 422
    assert message in answer.json()["detail"]


def test_batch_limits(service: Service, alice: httpx.Client) -> None:
    path = f"/v1/students/{service.student_id}/recommend/batch"
    too_many = alice.post(path, json={"histories": [["100"]] * 9, "k": 5})
    assert too_many.status_code == 422 and "at most 8" in too_many.json()["detail"]
    bad_row = alice.post(path, json={"histories": [["100"], ["x"]], "k": 5})
    assert "histories[1]: unknown item ids 'x'" in bad_row.json()["detail"]


# --- secrets --------------------------------------------------------------------------------


def test_keys_never_reach_responses_or_logs(
    service: Service, alice: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = []
    job = new_job(alice)
    for answer in (
        alice.get(f"/v1/jobs/{job['id']}"),
        alice.get("/v1/jobs"),
        alice.post(f"/v1/jobs/{job['id']}/cancel"),
        alice.post("/v1/jobs", json={**JOB, "budget": -1}),
        alice.post("/v1/jobs", json={**JOB, "teacher_url": 3}),
        httpx.get(f"{service.url}/metrics"),
    ):
        seen.append(answer.text + json.dumps(dict(answer.headers)))
    records = [f"{r.getMessage()} {vars(r)}" for r in caplog.records]
    assert any("job queued" in record for record in records)  # logging was captured
    for text in seen + records:
        assert TEACHER_KEY not in text and service.alice not in text


# --- command line ---------------------------------------------------------------------------


def test_keys_create_prints_only_the_key(tmp_path: Path) -> None:
    env = {"RECMIMIC_HOME": str(tmp_path)}
    result = CliRunner().invoke(cli_app, ["keys", "create", "carol"], env=env)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert len(key) == 43 and "\n" not in key
    app = create_app(ServiceSettings(home=tmp_path))
    with running(app) as url:
        answer = httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200 and answer.json()["items"] == []


@pytest.mark.parametrize("api_workers", [1, 2])
def test_serve_runs_the_api(tmp_path: Path, api_workers: int) -> None:
    """`recmimic serve` with 1 or 2 API processes; with 2, `/metrics` counts both's requests."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    temp = tmp_path / "tmp"  # where the server's shared metrics directory goes
    temp.mkdir()
    env = {
        **os.environ,
        "RECMIMIC_HOME": str(tmp_path),
        "RECMIMIC_API_WORKERS": str(api_workers),
        "TMPDIR": str(temp),
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: lines.extend(json.loads(x) for x in server.stderr if x.startswith("{"))
    )
    reader.start()

    def pids(message: str = "", route: str = "") -> set[int]:
        """The processes that logged `message` (or answered `route`) so far."""
        return {
            line["pid"]
            for line in list(lines)
            if (message and message in line["message"]) or (route and line.get("route") == route)
        }

    try:
        deadline = time.monotonic() + 60
        while len(pids("Started server process")) < api_workers:  # once per API process
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").status_code == 200
        sent = 0
        while sent < 10 or len(pids(route="/healthz")) < api_workers:  # each process answers
            assert sent < 500, "the requests never reached every API process"
            assert httpx.get(f"{url}/healthz").status_code == 200
            sent += 1
        counted = wait_for_sample(
            url, 'recmimic_http_requests_total{method="GET",route="/healthz",status="200"}', sent
        )
        timed = sample(
            counted, 'recmimic_http_request_duration_seconds_count{method="GET",route="/healthz"}'
        )
        assert timed == sent
        assert counted.count("# TYPE recmimic_jobs gauge") == 1  # the database's, not per process
        shared = [path.name for path in temp.glob("recmimic-metrics-*/*.db")]
        assert len(shared) == (2 * api_workers if api_workers > 1 else 0)  # counter, histogram
    finally:
        server.terminate()
        server.wait(timeout=20)
        reader.join(timeout=20)
    assert any(line.get("route") == "/readyz" for line in lines)  # JSON access log
    assert len(pids("Started server process")) == api_workers
    assert (tmp_path / "recmimic.sqlite3").is_file()
    assert list(temp.iterdir()) == []  # the shared metrics directory goes with the service


def sample(metrics: str, prefix: str) -> float | None:
    """The value of the first sample line of `metrics` (Prometheus text) starting `prefix`."""
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_sample(url: str, prefix: str, value: float, timeout_s: float = 10) -> str:
    """`/metrics` once its `prefix` sample reads `value`: a request is counted just after its
    answer is sent, so the last one may not be counted yet when the client has it."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = httpx.get(f"{url}/metrics").text
        seen = sample(metrics, prefix)
        if seen == value or time.monotonic() > deadline:
            assert seen == value, f"{prefix} is {seen}, not {value}"
            return metrics
        time.sleep(0.1)


def test_a_job_takes_a_session_profile_and_refuses_what_it_cannot_use(
    alice: httpx.Client,
) -> None:
    """A profile object of the TOML file's fields is stored with the job; one that would read
    the server's files, or sign with a key of the wrong form, is a 422 naming why."""
    examples = Path(__file__).resolve().parent.parent / "examples" / "profiles"
    recombee = load_profile(str(examples / "recombee.toml")).model_dump(mode="json")
    job = new_job(alice, profile=recombee)
    assert job["request"]["profile"]["mode"] == "session"
    assert job["request"]["profile"]["auth"]["kind"] == "hmac"
    from_file = {**recombee, "catalogue": {"file": "/etc/passwd"}}
    refused = alice.post("/v1/jobs", json={**JOB, "profile": from_file})
    assert refused.status_code == 422
    assert "a job cannot read the server's files" in refused.json()["detail"]
    personalize = load_profile(str(examples / "personalize.toml")).model_dump(mode="json")
    seeded = {"source": "seeded", "dataset": "ml-100k", "profile": personalize}
    unsigned = alice.post("/v1/jobs", json={**JOB, **seeded})
    assert unsigned.status_code == 422 and "ACCESS_KEY_ID:SECRET" in unsigned.json()["detail"]
    assert TEACHER_KEY not in unsigned.text
    signed = new_job(alice, **seeded, teacher_api_key="AKID:" + TEACHER_KEY)
    assert signed["request"]["profile"]["auth"]["kind"] == "sigv4"
