"""Where jobs may send requests: `teacher_allow` at `POST /v1/jobs` and in the worker.

The API is a real uvicorn server on loopback and the worker runs in this process, so a
stand-in resolver (`socket.getaddrinfo` for one made-up name) reaches both. Jobs aimed at
169.254.169.254 or 10.0.0.1 are only ever posted, never run; a spy on the client's connect
step fails the test (instead of connecting) if any non-loopback address reaches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from destination_stubs import NAME, FakeDNS, spy_on_connects
from fastapi import FastAPI, Request, Response

from service.api.app import create_app
from service.db.models import FAILED, QUEUED
from service.keys import create_key
from service.settings import TEACHER_ALLOW, ServiceSettings
from service.store import JobStore
from service.worker import Worker
from teacher_mock.server import running

TEACHER_KEY = "teacher-key-5b2d"


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return spy_on_connects(monkeypatch)


@pytest.fixture(scope="module")
def teacher() -> Iterator[tuple[int, list[str]]]:
    """A stub black box on loopback recording the paths asked; yields its port and them."""
    app = FastAPI()
    paths: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Response:
        paths.append(request.url.path)
        return Response(status_code=503)

    with running(app) as url:
        yield int(url.rsplit(":", 1)[1]), paths


def post(settings: ServiceSettings, teacher_url: str) -> tuple[httpx.Response, JobStore]:
    """`POST /v1/jobs` as alice to a fresh API over `settings`; the answer and the store."""
    app = create_app(settings)
    key = create_key(app.state.store.sessions, "alice")
    body = {"teacher_url": teacher_url, "teacher_api_key": TEACHER_KEY, "budget": 10}
    with running(app) as url:
        answer = httpx.post(
            f"{url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
    return answer, app.state.store


@pytest.mark.parametrize(
    ("teacher_url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://10.0.0.1:8000", "private"),
        ("http://127.0.0.1:8000", "loopback"),
        ("http://[::1]:8000", "loopback"),
        ("http://100.64.1.2", "shared (CGNAT)"),
        (f"http://{NAME}:8000", "loopback"),  # resolves to 127.0.0.1 (below)
    ],
)
def test_by_default_a_job_may_not_aim_at_a_non_public_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher_url: str, kind: str
) -> None:
    FakeDNS(monkeypatch, "127.0.0.1")
    answer, _ = post(ServiceSettings(home=tmp_path), teacher_url)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("body.teacher_url:") and f"{kind} address" in detail
    assert TEACHER_ALLOW in detail  # says which setting would allow it


@pytest.mark.parametrize(
    "teacher_url",
    ["http://169.254.169.254/latest", "http://10.0.0.1:8000", "http://127.0.0.1:8000"],
)
def test_the_allow_setting_lets_an_operator_permit_their_own_addresses(
    tmp_path: Path, teacher_url: str
) -> None:
    settings = ServiceSettings(home=tmp_path, teacher_allow="169.254.169.254, 10.0.0.0/8,127.0.0.1")
    answer, _ = post(settings, teacher_url)  # accepted and queued; no worker runs it here
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == QUEUED


def test_a_name_that_resolves_elsewhere_after_posting_is_refused_by_the_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    teacher: tuple[int, list[str]],
    connects: list[str],
) -> None:
    """DNS rebinding: allowed when posted (loopback is allowed here, the teacher's address),
    link-local when the worker connects. The job fails naming the setting; nothing is sent."""
    port, paths = teacher
    dns = FakeDNS(monkeypatch, "127.0.0.1")
    settings = ServiceSettings(home=tmp_path, teacher_allow="127.0.0.1", poll_s=0.1)
    answer, store = post(settings, f"http://{NAME}:{port}")
    assert answer.status_code == 201, answer.text
    dns.address = "169.254.169.254"
    before = len(paths)
    Worker(settings, store).run(once=True)
    job = store.get_job("alice", answer.json()["id"])
    assert job.status == FAILED, job.error
    assert job.error is not None and TEACHER_ALLOW in job.error and "link-local" in job.error
    assert "169.254" not in job.error and TEACHER_KEY not in job.error
    assert connects == [] and len(paths) == before


def test_a_queued_job_is_refused_when_the_operator_no_longer_allows_its_address(
    tmp_path: Path, teacher: tuple[int, list[str]], connects: list[str]
) -> None:
    port, paths = teacher
    allowing = ServiceSettings(home=tmp_path, teacher_allow="127.0.0.1", poll_s=0.1)
    answer, _ = post(allowing, f"http://127.0.0.1:{port}")
    assert answer.status_code == 201, answer.text
    before = len(paths)
    settings = ServiceSettings(home=tmp_path, poll_s=0.1)  # the default: loopback refused
    store = create_app(settings).state.store
    Worker(settings, store).run(once=True)
    job = store.get_job("alice", answer.json()["id"])
    assert job.status == FAILED and job.error is not None
    assert "127.0.0.1 is a loopback address" in job.error and TEACHER_ALLOW in job.error
    assert connects == [] and len(paths) == before


def test_an_allowed_local_teacher_is_reached_at_the_checked_address(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    teacher: tuple[int, list[str]],
    connects: list[str],
) -> None:
    """The same name still resolving to the allowed address: the worker connects to it (the
    stub answers 503 to everything, so the job then fails as unreachable, which is enough)."""
    port, paths = teacher
    FakeDNS(monkeypatch, "127.0.0.1")
    settings = ServiceSettings(home=tmp_path, teacher_allow="127.0.0.1", poll_s=0.1)
    answer, store = post(settings, f"http://{NAME}:{port}")
    assert answer.status_code == 201, answer.text
    before = len(paths)
    Worker(settings, store).run(once=True)
    job = store.get_job("alice", answer.json()["id"])
    assert job.status == FAILED and job.error is not None and "503" in job.error
    assert TEACHER_ALLOW not in job.error
    assert set(connects) == {"127.0.0.1"}
    assert paths[before:] and set(paths[before:]) == {"/v1/items"}
