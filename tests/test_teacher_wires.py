"""The commercial APIs' wires (teacher_mock.wire_recombee, wire_algolia, wire_personalize), served
on real ports with their own authentication.

Each wire serves the same tiny model as recmimic's own contract, so what it answers for a
written user or a seed item must be exactly what recmimic answers for the same history; the
teacher's quota book is the witness of what was paid, and writes must cost nothing.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi import FastAPI
from tiny_teacher import save_tiny_teacher
from typer.testing import CliRunner

from seqrec.data.loading import load_dataset
from teacher_mock.app import create_app
from teacher_mock.cli import serve as serve_command
from teacher_mock.server import running
from teacher_mock.sessions import SessionStore, check_workers
from teacher_mock.settings import TeacherSettings
from teacher_mock.signing import BotocoreMissing, sign_recombee, sign_sigv4

DATASET = "synthetic:150:60"
KEY = "wire-test-key"
AWS_ID, AWS_SECRET = "AKIDWIRETEST", "wire-test-secret-access-key"
PAGE_MAX = 25  # items_page_max of every server here, below the catalogue's size
ALGOLIA = {"X-Algolia-Application-Id": "RECMIMIC", "X-Algolia-API-Key": KEY}

Server = tuple[str, FastAPI]
StartServer = Callable[..., Server]


@pytest.fixture(scope="module")
def item_ids() -> list[str]:
    return [str(raw) for raw in load_dataset(DATASET).item_ids]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, item_ids: list[str]) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), item_ids)


@pytest.fixture(scope="module")
def start(model_dir: Path) -> Iterator[StartServer]:
    """Start the model behind a wire, some settings overridden; all stop with the module."""
    with ExitStack() as stack:

        def start_server(wire: str, **overrides: Any) -> Server:
            keys = [f"{AWS_ID}:{AWS_SECRET}"] if wire == "personalize" else [KEY]
            settings = TeacherSettings(
                model_dir=model_dir, api_keys=keys, wire=wire, items_page_max=PAGE_MAX, **overrides
            )
            app = create_app(settings)
            return stack.enter_context(running(app)), app

        yield start_server


@pytest.fixture(scope="module")
def recmimic(start: StartServer) -> str:
    return start("recmimic")[0]


@pytest.fixture(scope="module")
def recombee(start: StartServer) -> Server:
    return start("recombee")


@pytest.fixture(scope="module")
def algolia(start: StartServer) -> Server:
    return start("algolia")


@pytest.fixture(scope="module")
def personalize(start: StartServer) -> Server:
    return start("personalize")


def expected(recmimic: str, history: list[str], k: int) -> list[str]:
    """recmimic's own answer for the history: what every other wire must answer."""
    body = {"history": history, "k": k}
    bearer = {"Authorization": f"Bearer {KEY}"}
    answer = httpx.post(f"{recmimic}/v1/recommend", json=body, headers=bearer)
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def paid(app: FastAPI, key: str = KEY) -> int:
    return app.state.teacher.quota.usage(key).used


def assert_refused(answer: httpx.Response, status: int, *secrets: str) -> str:
    """A JSON `{"detail": str}` refusal with `status` that names none of `secrets`."""
    assert answer.status_code == status, answer.text
    assert list(answer.json()) == ["detail"] and isinstance(answer.json()["detail"], str)
    assert not any(secret in answer.text for secret in secrets)
    return answer.json()["detail"]


# --- recombee -------------------------------------------------------------------------------


def signed(url: str, target: str, key: str = KEY, timestamp: int | None = None) -> str:
    return url + sign_recombee(target, key, timestamp)


def views(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    params = [{"userId": user, "itemId": item, "timestamp": time.time()} for user, item in pairs]
    return {"requests": [{"method": "POST", "path": "/detailviews/", "params": p} for p in params]}


def write(url: str, pairs: list[tuple[str, str]]) -> httpx.Response:
    return httpx.post(signed(url, "/recmimic/batch/"), json=views(pairs))


def recomms(url: str, user: str, count: int | None = None) -> httpx.Response:
    query = "" if count is None else f"?count={count}"
    return httpx.get(signed(url, f"/recmimic/recomms/users/{user}/items/{query}"))


def test_recombee_answers_a_written_user_as_recmimic_answers_its_history(
    recombee: Server, recmimic: str, item_ids: list[str]
) -> None:
    url, app = recombee
    a, b, c, d, e, f = item_ids[:6]
    before = paid(app)
    written = write(url, [("u1", a), ("u2", b), ("u1", c), ("u2", d), ("u1", e)])
    assert written.status_code == 200 and written.json() == [{"code": 201, "json": "ok"}] * 5
    assert write(url, [("u1", f)]).status_code == 200
    assert paid(app) == before  # writes are free

    answer = recomms(url, "u1", count=7)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["id"] for r in body["recomms"]] == expected(recmimic, [a, c, e, f], 7)
    assert uuid.UUID(body["recommId"]).version == 4 and body["numberNextRecommsCalls"] == 0
    other = recomms(url, "u2").json()["recomms"]  # count defaults to 10
    assert [r["id"] for r in other] == expected(recmimic, [b, d], 10)
    assert paid(app) == before + 2
    usage = httpx.get(signed(url, "/v1/usage")).json()
    assert usage["used"] == paid(app)


def test_recombee_unknown_and_deleted_users_are_404_and_free(
    recombee: Server, item_ids: list[str]
) -> None:
    url, app = recombee
    before = paid(app)
    assert_refused(recomms(url, "nobody"), 404)
    assert write(url, [("leaving", item_ids[0])]).status_code == 200
    deleted = httpx.delete(signed(url, "/recmimic/users/leaving"))
    assert deleted.status_code == 200 and deleted.json() == "ok"
    assert_refused(recomms(url, "leaving"), 404)
    assert_refused(httpx.delete(signed(url, "/recmimic/users/leaving")), 404)
    assert paid(app) == before


def test_recombee_refuses_a_batch_with_an_unknown_item_whole(
    recombee: Server, recmimic: str, item_ids: list[str]
) -> None:
    url, app = recombee
    a, b = item_ids[:2]
    assert write(url, [("kept", a)]).status_code == 200
    detail = assert_refused(write(url, [("kept", b), ("fresh", "no-such-item")]), 422)
    assert "no-such-item" in detail
    assert_refused(recomms(url, "fresh"), 404)  # nothing stored, not even the valid view
    answer = recomms(url, "kept", count=5).json()["recomms"]
    assert [r["id"] for r in answer] == expected(recmimic, [a], 5)
    wrong = views([("kept", a)])
    wrong["requests"][0]["path"] = "/purchases/"
    assert_refused(httpx.post(signed(url, "/recmimic/batch/"), json=wrong), 422)
    assert_refused(httpx.post(signed(url, "/recmimic/batch/"), json={"requests": []}), 422)


def test_recombee_accepts_only_signed_urls(recombee: Server, item_ids: list[str]) -> None:
    url, app = recombee
    assert write(url, [("signer", item_ids[0])]).status_code == 200
    target = "/recmimic/recomms/users/signer/items/?count=3"
    now = int(time.time())
    refused = {
        "unsigned": url + target,
        "wrong key": signed(url, target, key="not-the-key"),
        "stale": signed(url, target, timestamp=now - 120),
        "future": signed(url, target, timestamp=now + 120),
        "sign not last": signed(url, target) + "&extra=1",
        "tampered": signed(url, target).replace("count=3", "count=4"),
        "no timestamp": f"{url}{target}&hmac_sign=00",
    }
    before = paid(app)
    for case, address in refused.items():
        answer = httpx.get(address, headers={"Authorization": f"Bearer {KEY}"})
        assert assert_refused(answer, 401, KEY), case
    for listing in ("/v1/usage", "/v1/items", "/recmimic/items/list/"):
        assert_refused(httpx.get(url + listing, headers={"Authorization": f"Bearer {KEY}"}), 401)
    assert paid(app) == before
    assert httpx.get(signed(url, target)).status_code == 200


def test_recombee_item_pages_reach_every_item_once(recombee: Server, item_ids: list[str]) -> None:
    url, _ = recombee
    seen: list[str] = []
    while page := httpx.get(
        signed(url, f"/recmimic/items/list/?offset={len(seen)}&count=7")
    ).json():
        seen += page
    assert seen == item_ids
    capped = httpx.get(signed(url, "/recmimic/items/list/?count=1000")).json()
    assert capped == item_ids[:PAGE_MAX]
    assert httpx.get(signed(url, f"/v1/items?limit={PAGE_MAX}")).json()["total"] == len(item_ids)


# --- algolia --------------------------------------------------------------------------------


def related(objectID: str, **fields: Any) -> dict[str, Any]:
    return {"indexName": "items", "model": "related-products", "objectID": objectID, **fields}


def ask_algolia(url: str, requests: list[dict[str, Any]], headers: Any = None) -> httpx.Response:
    return httpx.post(
        f"{url}/1/indexes/*/recommendations",
        json={"requests": requests},
        headers=ALGOLIA if headers is None else headers,
    )


def test_algolia_answers_each_seed_as_recmimic_answers_it(
    algolia: Server, recmimic: str, item_ids: list[str]
) -> None:
    url, app = algolia
    seeds, ks = item_ids[3:6], [5, 10, 3]
    asked = [related(seeds[0], maxRecommendations=5), related(seeds[1])]
    asked.append(related(seeds[2], maxRecommendations=3))
    before = paid(app)
    answer = ask_algolia(url, asked)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 3 and paid(app) == before + 3  # one answer per request entry
    for seed, k, result in zip(seeds, ks, results, strict=True):
        assert [hit["objectID"] for hit in result["hits"]] == expected(recmimic, [seed], k)
        assert [hit["_score"] for hit in result["hits"]] == [100 * (k - r) / k for r in range(k)]


def test_algolia_refuses_a_call_with_an_unknown_seed_whole(
    algolia: Server, item_ids: list[str]
) -> None:
    url, app = algolia
    before = paid(app)
    detail = assert_refused(ask_algolia(url, [related(item_ids[0]), related("nope")]), 422)
    assert "requests[1].objectID" in detail and "nope" in detail
    assert_refused(ask_algolia(url, [{**related(item_ids[0]), "indexName": "other"}]), 422)
    assert_refused(ask_algolia(url, [{**related(item_ids[0]), "model": "trending-items"}]), 422)
    assert_refused(ask_algolia(url, [related(item_ids[0], maxRecommendations=61)]), 422)
    assert_refused(ask_algolia(url, []), 422)
    assert paid(app) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Algolia-API-Key": KEY},
        {"X-Algolia-Application-Id": "OTHER", "X-Algolia-API-Key": KEY},
        {"X-Algolia-Application-Id": "RECMIMIC", "X-Algolia-API-Key": "wrong"},
        {"Authorization": f"Bearer {KEY}"},
    ],
    ids=["none", "no-app-id", "wrong-app-id", "wrong-key", "bearer"],
)
def test_algolia_takes_only_its_two_headers(
    algolia: Server, item_ids: list[str], headers: dict[str, str]
) -> None:
    url, _ = algolia
    answer = ask_algolia(url, [related(item_ids[0])], headers)
    assert assert_refused(answer, 403, KEY) == "Invalid Application-ID or API key"
    for listing in ("/v1/usage", "/1/indexes/items/browse"):
        assert_refused(httpx.get(url + listing, headers=headers), 403, KEY)


def test_algolia_browse_cursor_reaches_every_item_once(
    algolia: Server, item_ids: list[str]
) -> None:
    url, _ = algolia
    seen: list[str] = []
    params: dict[str, Any] = {"hitsPerPage": 7}
    while True:
        page = httpx.get(f"{url}/1/indexes/items/browse", params=params, headers=ALGOLIA).json()
        seen += [hit["objectID"] for hit in page["hits"]]
        if "cursor" not in page:
            break
        params["cursor"] = page["cursor"]
    assert seen == item_ids
    first = httpx.get(f"{url}/1/indexes/items/browse", headers=ALGOLIA).json()
    assert len(first["hits"]) == PAGE_MAX  # hitsPerPage capped at the server's page size
    for cursor in ("nope", "b2Zmc2V0Ojk5OTk=", "!!"):
        bad = httpx.get(f"{url}/1/indexes/items/browse", params={"cursor": cursor}, headers=ALGOLIA)
        assert_refused(bad, 422)


# --- personalize ----------------------------------------------------------------------------


def aws(
    url: str,
    path: str,
    body: dict[str, Any] | None = None,
    method: str = "POST",
    tamper: bytes | None = None,
    **signing: Any,
) -> httpx.Response:
    """A request signed as a botocore client signs it (`tamper`: the body sent instead)."""
    content = b"" if body is None else json.dumps(body).encode()
    credentials = {"access_key": AWS_ID, "secret_key": AWS_SECRET, **signing}
    headers = sign_sigv4(method, url + path, content, **credentials)
    sent = content if tamper is None else tamper
    return httpx.request(method, url + path, content=sent, headers=headers)


def events(user: str | None, items: list[str], session: str = "s-1") -> dict[str, Any]:
    listed = [{"eventType": "click", "itemId": item, "sentAt": time.time()} for item in items]
    body = {"trackingId": "t-1", "sessionId": session, "eventList": listed}
    return body if user is None else {**body, "userId": user}


def get_recs(url: str, user: str, n: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"campaignArn": "arn:aws:personalize:campaign/x", "userId": user}
    return aws(url, "/recommendations", body if n is None else {**body, "numResults": n})


def test_personalize_answers_a_user_as_recmimic_answers_its_events(
    personalize: Server, recmimic: str, item_ids: list[str]
) -> None:
    url, app = personalize
    key = f"{AWS_ID}:{AWS_SECRET}"
    first, second = item_ids[10:13], item_ids[13:15]
    before = paid(app, key)
    for items in (first, second):
        written = aws(url, "/events", events("p1", items))
        assert written.status_code == 200 and written.json() == {}
    assert paid(app, key) == before

    answer = get_recs(url, "p1", 8)
    assert answer.status_code == 200, answer.text
    listed = answer.json()["itemList"]
    assert [entry["itemId"] for entry in listed] == expected(recmimic, first + second, 8)
    scores = [entry["score"] for entry in listed]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 8
    uuid.UUID(answer.json()["recommendationId"])
    assert aws(url, "/events", events(None, first, session="anon")).status_code == 200
    by_session = get_recs(url, "anon").json()["itemList"]  # numResults defaults to 25
    assert [entry["itemId"] for entry in by_session] == expected(recmimic, first, 25)
    assert paid(app, key) == before + 2
    assert aws(url, "/v1/usage", method="GET").json()["used"] == paid(app, key)


def test_personalize_refuses_eleven_events_and_unknown_items_storing_nothing(
    personalize: Server, item_ids: list[str]
) -> None:
    url, app = personalize
    assert_refused(aws(url, "/events", events("p2", item_ids[:11])), 422)
    assert aws(url, "/events", events("p2", item_ids[:10])).status_code == 200
    detail = assert_refused(aws(url, "/events", events("p3", [item_ids[0], "ghost"])), 422)
    assert "ghost" in detail
    before = paid(app, f"{AWS_ID}:{AWS_SECRET}")
    assert_refused(get_recs(url, "p3"), 404)  # nothing stored
    assert_refused(get_recs(url, "never-seen"), 404)
    assert_refused(get_recs(url, "p2", 61), 422)
    assert paid(app, f"{AWS_ID}:{AWS_SECRET}") == before


def _amz_date(ago: timedelta) -> str:
    return (datetime.now(timezone.utc) - ago).strftime("%Y%m%dT%H%M%SZ")


def test_personalize_accepts_only_sigv4_with_a_known_key_and_a_fresh_date(
    personalize: Server, item_ids: list[str]
) -> None:
    url, _ = personalize
    assert aws(url, "/events", events("p4", item_ids[:2])).status_code == 200
    body = {"campaignArn": "arn", "userId": "p4", "numResults": 3}
    refused = {
        "wrong secret": aws(url, "/recommendations", body, secret_key="not-the-secret"),
        "unknown key id": aws(url, "/recommendations", body, access_key="AKIDOTHER"),
        "tampered body": aws(
            url, "/recommendations", body, tamper=json.dumps({**body, "numResults": 4}).encode()
        ),
        "stale date": aws(url, "/recommendations", body, amz_date=_amz_date(timedelta(minutes=6))),
        "future date": aws(
            url, "/recommendations", body, amz_date=_amz_date(-timedelta(minutes=6))
        ),
        "unsigned": httpx.post(f"{url}/recommendations", json=body),
        "bearer": httpx.post(
            f"{url}/recommendations", json=body, headers={"Authorization": f"Bearer {AWS_SECRET}"}
        ),
    }
    for case, answer in refused.items():
        assert assert_refused(answer, 403, AWS_SECRET), case
    recent = aws(url, "/recommendations", body, amz_date=_amz_date(timedelta(minutes=4)))
    assert recent.status_code == 200, recent.text
    assert aws(url, "/v1/items?offset=0&limit=5", method="GET").json()["items"] == item_ids[:5]
    assert_refused(httpx.get(f"{url}/v1/usage"), 403)


def test_personalize_keys_need_a_colon_and_botocore(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="ACCESS_KEY_ID:SECRET_ACCESS_KEY") as raised:
        create_app(TeacherSettings(model_dir=model_dir, api_keys=["nocolon"], wire="personalize"))
    assert "nocolon" not in str(raised.value)
    monkeypatch.setitem(sys.modules, "botocore", None)  # import botocore now fails
    settings = TeacherSettings(model_dir=model_dir, api_keys=["a:b"], wire="personalize")
    with pytest.raises(BotocoreMissing, match=r"recmimic\[aws\]") as missing:
        create_app(settings)
    assert "\n" not in str(missing.value)


# --- shared: sessions, limits, faults, workers ----------------------------------------------


def test_the_session_store_keeps_recent_users_and_their_recent_items() -> None:
    store = SessionStore(max_users=2, max_history=3)
    store.extend("a", ["1", "2"])
    store.extend("b", ["3"])
    assert store.history("a") == ["1", "2"]  # reading makes "a" the most recent
    store.extend("c", ["4"])
    assert store.history("b") is None and len(store) == 2
    store.extend("a", ["5", "6"])
    assert store.history("a") == ["2", "5", "6"]
    assert store.forget("a") and not store.forget("a") and store.history("a") is None


def test_a_bounded_server_forgets_its_least_recent_user(
    start: StartServer, recmimic: str, item_ids: list[str]
) -> None:
    url, app = start("recombee", max_sessions=2, max_history=3)
    assert write(url, [("old", item_ids[0]), ("mid", item_ids[1])]).status_code == 200
    assert (
        write(url, [("mid", i) for i in item_ids[2:7]] + [("new", item_ids[7])]).status_code == 200
    )
    assert_refused(recomms(url, "old"), 404)
    assert len(app.state.teacher.sessions) == 2
    answer = recomms(url, "mid", count=5).json()["recomms"]
    assert [r["id"] for r in answer] == expected(recmimic, item_ids[4:7], 5)  # the last 3


def test_writes_count_against_the_rate_limit_but_not_the_quota(
    start: StartServer, item_ids: list[str]
) -> None:
    url, app = start("recombee", rate=0.01, burst=2, quota=1)
    assert [write(url, [("r", item_ids[0])]).status_code for _ in range(2)] == [200, 200]
    refused = write(url, [("r", item_ids[0])])
    assert_refused(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert paid(app) == 0


def test_faults_hit_answers_and_not_writes(start: StartServer, item_ids: list[str]) -> None:
    url, app = start("recombee", truncate_rate=1.0)
    written = write(url, [("f", item_ids[0])])
    assert written.status_code == 200 and written.json() == [{"code": 201, "json": "ok"}]
    answer = recomms(url, "f", count=5)
    assert answer.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)
    assert paid(app) == 1  # a truncated answer was produced, so it is charged


def test_session_wires_refuse_several_workers(model_dir: Path) -> None:
    check_workers("algolia", 4)  # stateless: any number
    with pytest.raises(ValueError, match="one worker"):
        check_workers("personalize", 2)
    command = typer.Typer()
    command.command()(serve_command)
    result = CliRunner().invoke(
        command,
        ["--model", str(model_dir), "--api-key", "k", "--wire", "recombee", "--workers", "2"],
    )
    assert result.exit_code == 2 and "one worker" in result.output
    assert "Traceback" not in result.output
