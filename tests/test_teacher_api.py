"""The black-box contract (DESIGN.md section 4), exercised over HTTP against real uvicorn servers.

Each server runs in a background thread on a free loopback port and serves a tiny saved
artifact; the expected answers come straight from `seqrec.inference.top_k`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import typer
from fastapi import FastAPI
from tiny_teacher import save_tiny_teacher
from typer.testing import CliRunner

from seqrec.artifacts import Artifact, load_artifact
from seqrec.data.sequences import Sequences
from seqrec.inference import top_k
from teacher_mock.app import create_app
from teacher_mock.cli import serve as serve_command
from teacher_mock.server import app_from_env, running
from teacher_mock.settings import TeacherSettings, settings_env

KEY, OTHER_KEY = "test-key", "other-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
N_ITEMS, MAX_LEN = 30, 20
ITEM_IDS = [str(100 + i) for i in range(N_ITEMS)]  # numeric-looking raw ids, as in ML-100k
MAX_HISTORY, MAX_BATCH, MAX_BODY = 50, 8, 16_384

StartTeacher = Callable[..., tuple[str, FastAPI]]


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), ITEM_IDS, MAX_LEN)


@pytest.fixture(scope="module")
def reference(artifact_dir: Path) -> Artifact:
    """A copy of the teacher's model, loaded apart from the servers', to compute expectations."""
    return load_artifact(artifact_dir)


@pytest.fixture(scope="module")
def start_teacher(artifact_dir: Path) -> Iterator[StartTeacher]:
    """Start a teacher with some settings overridden; every server stops with the module."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> tuple[str, FastAPI]:
            settings = TeacherSettings(
                model_dir=artifact_dir, api_keys=[KEY, OTHER_KEY], **overrides
            )
            app = create_app(settings)
            url = stack.enter_context(running(app))
            assert httpx.get(f"{url}/healthz").status_code == 200
            return url, app

        yield start


@pytest.fixture(scope="module")
def teacher(start_teacher: StartTeacher) -> tuple[str, FastAPI]:
    return start_teacher(max_history=MAX_HISTORY, max_batch=MAX_BATCH, max_body_bytes=MAX_BODY)


@pytest.fixture
def client(teacher: tuple[str, FastAPI]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=teacher[0], headers=AUTH, timeout=10) as client:
        yield client


def random_histories(n: int, seed: int = 0) -> list[list[str]]:
    """Histories of 1..25 raw ids (some longer than max_len, some with repeats)."""
    rng = random.Random(seed)
    return [[rng.choice(ITEM_IDS) for _ in range(rng.randint(1, 25))] for _ in range(n)]


def expected(reference: Artifact, histories: list[list[str]], k: int) -> list[list[str]]:
    dense = {raw: i for i, raw in enumerate(ITEM_IDS, start=1)}
    seqs = Sequences.from_lists([[dense[item] for item in h] for h in histories])
    # top_k pads a row with 0 when fewer than k unseen items remain; the API answers shorter.
    rows = top_k(reference.model, seqs, k).tolist()
    return [[ITEM_IDS[i - 1] for i in row if i] for row in rows]


def usage(url: str, key: str = KEY) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()


# --- auth -----------------------------------------------------------------------------------


def test_healthz_needs_no_key(teacher: tuple[str, FastAPI], reference: Artifact) -> None:
    answer = httpx.get(f"{teacher[0]}/healthz")
    assert answer.status_code == 200
    assert answer.json()["model_version"] == reference.version


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": ""},
    ],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/v1/recommend", {"history": ["100"], "k": 5}),
        ("POST", "/v1/recommend/batch", {"histories": [["100"]], "k": 5}),
        ("GET", "/v1/items", None),
        ("GET", "/v1/usage", None),
    ],
)
def test_requests_without_a_valid_key_are_401(
    teacher: tuple[str, FastAPI], headers: dict[str, str], method: str, path: str, body: Any
) -> None:
    answer = httpx.request(method, teacher[0] + path, json=body, headers=headers)
    assert answer.status_code == 401
    assert "API key" in answer.json()["detail"]
    assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}], ids=["missing", "wrong"]
)
@pytest.mark.parametrize("path", ["/v1/recommend", "/v1/recommend/batch"])
@pytest.mark.parametrize(
    "content,refused",
    [(b"{not json", 422), (b'{"k": "many"}', 422), (b"[" + b" " * MAX_BODY + b"]", 413)],
    ids=["malformed", "schema-invalid", "too-large"],
)
def test_a_bad_key_is_refused_before_the_body_is_read(
    teacher: tuple[str, FastAPI], headers: dict[str, str], path: str, content: bytes, refused: int
) -> None:
    url = teacher[0] + path
    assert httpx.post(url, content=content, headers=AUTH).status_code == refused
    answer = httpx.post(url, content=content, headers=headers)
    assert answer.status_code == 401, answer.text
    assert "API key" in answer.json()["detail"]


def test_a_bad_key_is_refused_before_the_parameters_are_read(teacher: tuple[str, FastAPI]) -> None:
    url = f"{teacher[0]}/v1/items?offset=-1"
    assert httpx.get(url, headers=AUTH).status_code == 422
    assert httpx.get(url).status_code == 401


# --- answers --------------------------------------------------------------------------------


def test_answers_are_the_models_top_k_without_the_history(
    client: httpx.Client, reference: Artifact
) -> None:
    histories = random_histories(20)
    for history, want in zip(histories, expected(reference, histories, 10), strict=True):
        answer = client.post("/v1/recommend", json={"history": history, "k": 10})
        assert answer.status_code == 200
        assert answer.headers["X-Model-Version"] == reference.version
        items = answer.json()["items"]
        assert items == want
        assert len(items) == 10 and len(set(items)) == 10
        assert not set(items) & set(history)
        assert set(answer.json()) == {"items"}  # no scores unless asked for


def test_k_can_reach_the_catalogue_size(client: httpx.Client) -> None:
    history = ["100", "101", "100", "102"]
    items = client.post("/v1/recommend", json={"history": history, "k": N_ITEMS}).json()["items"]
    assert sorted(items) == sorted(set(ITEM_IDS) - set(history))  # every unseen item, once


def test_integer_ids_are_read_as_raw_ids(client: httpx.Client) -> None:
    as_str = client.post("/v1/recommend", json={"history": ["105", "120"], "k": 5}).json()
    as_int = client.post("/v1/recommend", json={"history": [105, 120], "k": 5}).json()
    assert as_int == as_str


def test_a_history_gets_the_same_answer_alone_or_in_any_batch(
    start_teacher: StartTeacher,
) -> None:
    """To the last bit of every score: a lone history's forward pass once took other kernels
    than a batch's, and a trained teacher swapped ranks 20 and 21 of a history asked inside a
    batch of 64 rather than alone."""
    url, _ = start_teacher(scores=True)
    histories = random_histories(MAX_BATCH, seed=1)

    def answers(body: dict[str, Any], path: str) -> list[tuple[list[str], list[float]]]:
        reply = httpx.post(f"{url}{path}", json=body, headers=AUTH)
        assert reply.status_code == 200
        results = reply.json()["results"] if path.endswith("batch") else [reply.json()]
        return [(result["items"], result["scores"]) for result in results]

    batch = answers({"histories": histories, "k": 7}, "/v1/recommend/batch")
    pairs = answers({"histories": histories[:2], "k": 7}, "/v1/recommend/batch")
    alone = [answers({"history": h, "k": 7}, "/v1/recommend")[0] for h in histories]
    assert batch == alone and pairs == alone[:2]


def test_concurrent_requests_share_forward_passes_and_stay_correct(
    teacher: tuple[str, FastAPI], reference: Artifact
) -> None:
    url, app = teacher
    histories = random_histories(64, seed=2)
    passes_before = app.state.teacher.batcher.forward_passes

    async def ask_all() -> list[list[str]]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/recommend", json={"history": h, "k": 10}) for h in histories)
            )
        return [answer.json()["items"] for answer in answers]

    assert asyncio.run(ask_all()) == expected(reference, histories, 10)
    assert app.state.teacher.batcher.forward_passes - passes_before < len(histories)


def test_items_pages_cover_the_catalogue_once(client: httpx.Client) -> None:
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = client.get("/v1/items", params={"offset": offset, "limit": 7}).json()
        assert page["total"] == N_ITEMS
        seen += page["items"]
        offset = page["next_offset"]
    assert seen == ITEM_IDS


def test_scores_come_only_when_switched_on(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(scores=True)
    answer = httpx.post(f"{url}/v1/recommend", json={"history": ["100"], "k": 5}, headers=AUTH)
    scores = answer.json()["scores"]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)


# --- bad input ------------------------------------------------------------------------------

BAD_INPUTS = {
    "unknown-item": ("/v1/recommend", {"history": ["100", "nope", "zzz"], "k": 5}, "'nope', 'zzz'"),
    "empty-history": ("/v1/recommend", {"history": [], "k": 5}, "history is empty"),
    "k-zero": ("/v1/recommend", {"history": ["100"], "k": 0}, "k must be between 1 and 30"),
    "k-too-big": ("/v1/recommend", {"history": ["100"], "k": N_ITEMS + 1}, "k must be between"),
    "history-too-long": (
        "/v1/recommend",
        {"history": ["100"] * (MAX_HISTORY + 1), "k": 5},
        f"at most {MAX_HISTORY}",
    ),
    "history-not-a-list": ("/v1/recommend", {"history": "100", "k": 5}, "body.history"),
    "id-not-a-string": ("/v1/recommend", {"history": [1.5, True], "k": 5}, "body.history.0"),
    "k-a-string": ("/v1/recommend", {"history": ["100"], "k": "5"}, "body.k"),
    "k-a-float": ("/v1/recommend", {"history": ["100"], "k": 2.5}, "body.k"),
    "no-history": ("/v1/recommend", {"k": 5}, "body.history: Field required"),
    "unknown-field": ("/v1/recommend", {"history": ["100"], "K": 5}, "body.K"),
    "not-an-object": ("/v1/recommend", ["100"], "body"),
    "batch-too-many": (
        "/v1/recommend/batch",
        {"histories": [["100"]] * (MAX_BATCH + 1), "k": 5},
        f"at most {MAX_BATCH}",
    ),
    "batch-empty": ("/v1/recommend/batch", {"histories": [], "k": 5}, "histories is empty"),
    "batch-empty-history": (
        "/v1/recommend/batch",
        {"histories": [["100"], ["101"], []], "k": 5},
        "histories[2] is empty",
    ),
    "batch-unknown-item": (
        "/v1/recommend/batch",
        {"histories": [["100"], ["x1"]], "k": 5},
        "histories[1]: unknown item ids 'x1'",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_422_with_a_message(
    client: httpx.Client, reference: Artifact, case: tuple[str, Any, str]
) -> None:
    path, body, fragment = case
    answer = client.post(path, json=body)
    assert answer.status_code == 422
    assert fragment in answer.json()["detail"]
    assert answer.headers["X-Model-Version"] == reference.version


@pytest.mark.parametrize("content", [b'{"history": [', b"", b"\xff\xfe", b"null"])
def test_malformed_json_is_422(client: httpx.Client, content: bytes) -> None:
    answer = client.post("/v1/recommend", content=content)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("body")


def test_unknown_ids_are_named_a_few_at_a_time(client: httpx.Client) -> None:
    history = [f"x{i}" for i in range(8)]
    detail = client.post("/v1/recommend", json={"history": history, "k": 5}).json()["detail"]
    assert "'x0'" in detail and "'x4'" in detail and "'x5'" not in detail and "3 more" in detail


def test_oversized_body_is_413(client: httpx.Client) -> None:
    body = {"histories": [["100"] * 10] * 500, "k": 5}  # about 40 kB
    answer = client.post("/v1/recommend/batch", json=body)
    assert answer.status_code == 413
    assert str(MAX_BODY) in answer.json()["detail"]


def test_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    chunks = (b" " * 4096 for _ in range(8))  # no Content-Length: the limit holds while reading
    answer = client.post("/v1/recommend", content=chunks)
    assert answer.status_code == 413


def test_bad_query_parameters_are_422_with_a_message(client: httpx.Client) -> None:
    answer = client.get("/v1/items", params={"limit": 0})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("query.limit")


def test_a_history_longer_than_max_len_uses_its_last_items(
    client: httpx.Client, reference: Artifact
) -> None:
    history = random_histories(1, seed=3)[0] + ITEM_IDS[:MAX_LEN]
    items = client.post("/v1/recommend", json={"history": history, "k": 5}).json()["items"]
    assert items == expected(reference, [history], 5)[0]


def test_an_empty_history_is_a_422_with_a_detail_string(client: httpx.Client) -> None:
    answer = client.post("/v1/recommend", json={"history": [], "k": 5})
    assert answer.status_code == 422
    assert list(answer.json()) == ["detail"] and isinstance(answer.json()["detail"], str)
    assert "history is empty" in answer.json()["detail"]


def test_openapi_documents_the_refusals_the_routes_give(client: httpx.Client) -> None:
    """The schema says what the app does: `{"detail": str}` errors, no FastAPI list-of-errors
    422 body, Retry-After on 429, and no empty history."""
    spec = client.get("/openapi.json").json()
    detail = spec["components"]["schemas"]["ErrorDetail"]
    assert detail["required"] == ["detail"] and detail["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    expected_statuses = {
        ("/v1/recommend", "post"): {"401", "403", "413", "422", "429"},
        ("/v1/recommend/batch", "post"): {"401", "403", "413", "422", "429"},
        ("/v1/items", "get"): {"401", "422", "429"},
        ("/v1/usage", "get"): {"401"},
    }
    for (path, method), statuses in expected_statuses.items():
        responses = spec["paths"][path][method]["responses"]
        assert set(responses) == {"200", *statuses}, path
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorDetail"}, (path, status)
        if "429" in statuses:
            assert "Retry-After" in responses["429"]["headers"]
    body = spec["paths"]["/v1/recommend"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["history"]["minItems"] == 1


# --- quota and rate limit -------------------------------------------------------------------


def test_quota_counts_every_answered_history(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(quota=5)
    with httpx.Client(base_url=url, headers=AUTH) as client:
        assert client.post("/v1/recommend", json={"history": ["100"], "k": 3}).status_code == 200
        batch = {"histories": [["100"], ["101"], ["102"]], "k": 3}
        assert client.post("/v1/recommend/batch", json=batch).status_code == 200
        assert client.post("/v1/recommend", json={"history": [], "k": 3}).status_code == 422
        assert usage(url) == {"used": 4, "quota": 5, "remaining": 1}

        too_big = client.post("/v1/recommend/batch", json={"histories": [["100"]] * 2, "k": 3})
        assert too_big.status_code == 403
        assert "quota exhausted" in too_big.json()["detail"]
        assert client.post("/v1/recommend", json={"history": ["100"], "k": 3}).status_code == 200
        refused = client.post("/v1/recommend", json={"history": ["100"], "k": 3})
        assert refused.status_code == 403
        assert "5 of 5" in refused.json()["detail"]
    assert usage(url) == {"used": 5, "quota": 5, "remaining": 0}
    assert usage(url, OTHER_KEY) == {"used": 0, "quota": 5, "remaining": 5}  # per key


def test_rate_limit_answers_429_with_retry_after(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(rate=0.5, burst=2)
    with httpx.Client(base_url=url, headers=AUTH) as client:
        codes = [client.get("/v1/items").status_code for _ in range(2)]
        refused = client.post("/v1/recommend", json={"history": ["100"], "k": 3})
    assert codes == [200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "rate limit" in refused.json()["detail"]
    assert usage(url)["used"] == 0
    other = httpx.get(f"{url}/v1/items", headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert other.status_code == 200  # buckets are per key


# --- fault injection ------------------------------------------------------------------------


def test_error_faults_are_503_and_not_charged(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(error_rate=1.0)
    with httpx.Client(base_url=url, headers=AUTH) as client:
        answers = [
            client.post("/v1/recommend", json={"history": ["100"], "k": 3}) for _ in range(3)
        ]
        answers.append(client.post("/v1/recommend/batch", json={"histories": [["100"]], "k": 3}))
    assert {answer.status_code for answer in answers} == {503}
    assert usage(url)["used"] == 0


def test_truncated_answers_are_invalid_json_and_charged(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(truncate_rate=1.0)
    answer = httpx.post(f"{url}/v1/recommend", json={"history": ["100"], "k": 5}, headers=AUTH)
    assert answer.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)
    assert usage(url)["used"] == 1


def test_timeout_faults_hang_then_504_and_are_charged(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(timeout_rate=1.0, timeout_hang_s=0.3)
    started = time.monotonic()
    answer = httpx.post(f"{url}/v1/recommend", json={"history": ["100"], "k": 5}, headers=AUTH)
    assert answer.status_code == 504
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}/v1/recommend", json={"history": ["100"], "k": 5}, headers=AUTH, timeout=0.1
        )
    time.sleep(0.3)
    assert usage(url)["used"] == 2


def test_latency_is_added_to_every_request(start_teacher: StartTeacher) -> None:
    url, _ = start_teacher(latency_ms=150)
    started = time.monotonic()
    answer = httpx.post(f"{url}/v1/recommend", json={"history": ["100"], "k": 5}, headers=AUTH)
    assert answer.status_code == 200 and time.monotonic() - started >= 0.15


def test_fault_draws_are_seeded(start_teacher: StartTeacher) -> None:
    def codes() -> list[int]:
        url, _ = start_teacher(error_rate=0.5, fault_seed=7)
        with httpx.Client(base_url=url, headers=AUTH) as client:
            return [
                client.post("/v1/recommend", json={"history": ["100"], "k": 3}).status_code
                for _ in range(12)
            ]

    first = codes()
    assert first == codes() and {200, 503} == set(first)


# --- settings and command line --------------------------------------------------------------


def test_keys_come_from_the_environment_and_a_file(
    artifact_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("# team keys\nfrom-file\n\n")
    monkeypatch.setenv("RECMIMIC_TEACHER_MODEL_DIR", str(artifact_dir))
    monkeypatch.setenv("RECMIMIC_TEACHER_API_KEYS", "a,b")
    monkeypatch.setenv("RECMIMIC_TEACHER_API_KEYS_FILE", str(keys_file))
    settings = TeacherSettings()  # type: ignore[call-arg]
    assert settings.key_values() == ["a", "b", "from-file"]
    assert "from-file" not in repr(settings)


def test_worker_processes_rebuild_the_same_settings_from_the_environment(
    artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = TeacherSettings(
        model_dir=artifact_dir,
        api_keys=[KEY],
        quota=9,
        error_rate=0.25,
        torch_threads=torch.get_num_threads(),  # leave this test process as it is
    )
    for name, value in settings_env(settings).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    rebuilt = TeacherSettings()  # type: ignore[call-arg]
    assert rebuilt.model_dump() == settings.model_dump()
    assert rebuilt.key_values() == [KEY]
    assert isinstance(app_from_env(), FastAPI)


def test_settings_refuse_no_keys_and_impossible_fault_rates(artifact_dir: Path) -> None:
    with pytest.raises(ValueError, match="no API key"):
        TeacherSettings(model_dir=artifact_dir, api_keys=[])
    with pytest.raises(ValueError, match="at most 1"):
        TeacherSettings(model_dir=artifact_dir, api_keys=[KEY], error_rate=0.6, timeout_rate=0.6)


def test_cli_reports_a_bad_model_dir_in_one_line(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(serve_command)
    result = CliRunner().invoke(
        app, ["--model", str(tmp_path / "missing"), "--api-key", "secret-key"]
    )
    assert result.exit_code != 0
    assert "not a model artifact" in result.output
    assert "Traceback" not in result.output and "secret-key" not in result.output


def test_cli_needs_a_key(artifact_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECMIMIC_TEACHER_API_KEYS", raising=False)
    monkeypatch.delenv("RECMIMIC_TEACHER_API_KEYS_FILE", raising=False)
    app = typer.Typer()
    app.command()(serve_command)
    result = CliRunner().invoke(app, ["--model", str(artifact_dir)])
    assert result.exit_code != 0
    assert "no API key" in result.output
