"""The black-box client (extractor.client) against real teacher servers over HTTP.

Each teacher serves a tiny untrained SASRec artifact from `teacher_mock` on a loopback port;
expected answers come straight from the model (`seqrec.inference.top_k`), so "equal to the
teacher's answer" is checked against the model itself, not against another HTTP reply.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from tiny_teacher import save_tiny_teacher

from extractor.catalogue import catalogue
from extractor.client import (
    BUDGET_REFUSED,
    BlackBoxClient,
    ClientConfig,
    Outcome,
    _retry_after,
    charged_for,
)
from extractor.errors import BlackBoxError
from extractor.http import Response as HTTPResponse
from seqrec.artifacts import Artifact, load_artifact
from seqrec.data.sequences import Sequences
from seqrec.inference import top_k
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

KEY = "client-test-key"
N_ITEMS, K = 30, 10
ITEM_IDS = [str(100 + i) for i in range(N_ITEMS)]


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    path: str
    status: int
    arrived: float
    answered: float
    retry_after: str | None


StartTeacher = Callable[..., tuple[str, list[Hit]]]


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("teacher"), ITEM_IDS)


@pytest.fixture(scope="module")
def reference(artifact_dir: Path) -> Artifact:
    return load_artifact(artifact_dir)


@pytest.fixture(scope="module")
def start_teacher(artifact_dir: Path) -> Iterator[StartTeacher]:
    """Start a teacher with some settings, optionally without some routes; every request is
    recorded. All servers stop with the module."""
    with ExitStack() as stack:

        def start(without: Sequence[str] = (), **overrides: Any) -> tuple[str, list[Hit]]:
            settings = TeacherSettings(model_dir=artifact_dir, api_keys=[KEY], **overrides)
            app = create_app(settings)
            app.router.routes = [
                r for r in app.router.routes if getattr(r, "path", "") not in without
            ]
            hits = record_requests(app)
            return stack.enter_context(running(app)), hits

        yield start


@pytest.fixture(scope="module")
def clean(start_teacher: StartTeacher) -> tuple[str, list[Hit]]:
    return start_teacher()


@pytest.fixture(scope="module")
def bare(start_teacher: StartTeacher) -> tuple[str, list[Hit]]:
    """A black box with neither the batch route nor the catalogue listing."""
    return start_teacher(without=["/v1/recommend/batch", "/v1/items"])


def record_requests(app: FastAPI) -> list[Hit]:
    hits: list[Hit] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Callable[..., Any]) -> Response:
        arrived = time.monotonic()
        response = await call_next(request)
        retry_after = response.headers.get("retry-after")
        hits.append(
            Hit(request.url.path, response.status_code, arrived, time.monotonic(), retry_after)
        )
        return response

    return hits


def random_histories(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(ITEM_IDS) for _ in range(rng.randint(1, 25))] for _ in range(n)]


def expected(reference: Artifact, histories: list[list[str]], k: int = K) -> list[list[str]]:
    dense = {raw: i for i, raw in enumerate(ITEM_IDS, start=1)}
    seqs = Sequences.from_lists([[dense[item] for item in h] for h in histories])
    rows = top_k(reference.model, seqs, k).tolist()
    return [[ITEM_IDS[i - 1] for i in row if i] for row in rows]  # 0 pads: fewer unseen than k


class Ledger:
    """A recording budget hook with an optional hard limit on histories that may be paid."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.in_flight = self.paid = self.unknown = self.free = self.answered = self.sends = 0

    async def on_send(self, n_histories: int) -> bool:
        committed = self.in_flight + self.paid + self.unknown
        if self.limit is not None and committed + n_histories > self.limit:
            return False
        self.in_flight += n_histories
        self.sends += 1
        return True

    async def on_result(self, n_histories: int, charged: bool | None, answered: int) -> None:
        self.in_flight -= n_histories
        self.answered += answered
        if charged is None:
            self.unknown += n_histories
        elif charged:
            self.paid += n_histories
        else:
            self.free += n_histories


def ask(
    url: str, histories: Sequence[Sequence[str]], budget: Ledger | None = None, **config: Any
) -> tuple[list[Outcome], BlackBoxClient]:
    async def run() -> tuple[list[Outcome], BlackBoxClient]:
        settings = ClientConfig(base_url=url, api_key=KEY, **config)
        async with BlackBoxClient(settings, budget) as client:
            return await client.recommend_many(histories, K), client

    return asyncio.run(run())


def usage(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {KEY}"}).json()


def recommend_hits(hits: list[Hit]) -> list[Hit]:
    return [hit for hit in hits if hit.path.startswith("/v1/recommend")]


# --- clean answers --------------------------------------------------------------------------


def test_batch_answers_equal_the_teachers(
    clean: tuple[str, list[Hit]], reference: Artifact
) -> None:
    url, hits = clean
    histories = random_histories(300)
    before = len(hits)
    outcomes, client = ask(url, histories)
    assert [o.items for o in outcomes] == expected(reference, histories)
    assert client.uses_batch is True
    assert client.model_tag == reference.version
    assert {o.model_tag for o in outcomes} == {reference.version}
    assert [h.path for h in hits[before:]] == ["/v1/recommend/batch"] * 2  # 256 + 44


def test_single_requests_give_the_same_answers(
    clean: tuple[str, list[Hit]], reference: Artifact
) -> None:
    url, hits = clean
    histories = random_histories(20, seed=1)
    before = len(hits)
    outcomes, client = ask(url, histories, batch=False, max_concurrency=4)
    assert [o.items for o in outcomes] == expected(reference, histories)
    assert client.uses_batch is False
    assert {h.path for h in hits[before:]} == {"/v1/recommend"}


def most_at_once(hits: list[Hit]) -> int:
    """The most requests the server was handling at one moment."""
    events = sorted([(h.arrived, 1) for h in hits] + [(h.answered, -1) for h in hits])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_concurrent_single_calls_share_the_connection_slots(
    clean: tuple[str, list[Hit]], reference: Artifact
) -> None:
    """Five calls at once, one request per history: every answer is right, in its own call's
    order, and no more than `max_concurrency` requests are ever in flight together."""
    url, hits = clean
    calls = [random_histories(12, seed=20 + c) for c in range(5)]

    async def run() -> list[list[Outcome]]:
        settings = ClientConfig(base_url=url, api_key=KEY, batch=False, max_concurrency=3)
        async with BlackBoxClient(settings) as client:
            return await asyncio.gather(*(client.recommend_many(h, K) for h in calls))

    before = len(hits)
    answered = asyncio.run(run())
    for histories, outcomes in zip(calls, answered, strict=True):
        assert [o.items for o in outcomes] == expected(reference, histories)
    assert len(recommend_hits(hits[before:])) == 60
    assert 1 < most_at_once(hits[before:]) <= 3


def test_a_cancelled_single_call_sends_no_more_requests(clean: tuple[str, list[Hit]]) -> None:
    url, hits = clean

    async def run() -> None:
        settings = ClientConfig(base_url=url, api_key=KEY, batch=False, max_concurrency=1)
        async with BlackBoxClient(settings) as client:
            call = asyncio.ensure_future(client.recommend_many(random_histories(50), K))
            while len(hits) == before:  # until the first request has been answered
                await asyncio.sleep(0.001)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.sleep(0.2)  # time enough for several more requests, were any sent

    before = len(hits)
    asyncio.run(run())
    assert 1 <= len(recommend_hits(hits[before:])) <= 2  # the first, and one in flight


def test_without_a_batch_route_the_client_probes_once_then_asks_one_by_one(
    bare: tuple[str, list[Hit]], reference: Artifact
) -> None:
    url, hits = bare
    used_before = usage(url)["used"]
    histories = random_histories(20, seed=2)
    outcomes, client = ask(url, histories, batch_size=4, max_concurrency=4)
    assert [o.items for o in outcomes] == expected(reference, histories)
    assert client.uses_batch is False
    paths = [h.path for h in hits]
    assert paths.count("/v1/recommend/batch") == 1  # five chunks, one probe
    assert paths.count("/v1/recommend") == 20
    assert usage(url)["used"] - used_before == 20


def test_empty_histories_fail_without_a_request(clean: tuple[str, list[Hit]]) -> None:
    url, hits = clean
    before = len(hits)
    outcomes, _ = ask(url, [[], ["100"], []])
    assert [o.reason for o in outcomes] == ["empty history", None, "empty history"]
    assert outcomes[1].ok and len(recommend_hits(hits[before:])) == 1


def test_one_bad_history_fails_alone(clean: tuple[str, list[Hit]], reference: Artifact) -> None:
    url, _ = clean
    histories = random_histories(9, seed=3)
    histories[6] = ["100", "no-such-item"]
    outcomes, _ = ask(url, histories)
    assert not outcomes[6].ok and outcomes[6].reason is not None
    # The status and a fixed description: nothing the black box wrote is relayed.
    assert outcomes[6].reason == "422: the black box refused the request's content"
    good = histories[:6] + histories[7:]
    assert [o.items for o in outcomes[:6] + outcomes[7:]] == expected(reference, good)


def test_catalogue_pages_through_the_items(clean: tuple[str, list[Hit]]) -> None:
    async def run(url: str) -> list[str] | None:
        config = ClientConfig(base_url=url, api_key=KEY, items_page_size=7)
        async with BlackBoxClient(config) as client:
            return await catalogue(client)

    assert asyncio.run(run(clean[0])) == ITEM_IDS


def test_catalogue_is_none_when_the_black_box_lists_nothing(bare: tuple[str, list[Hit]]) -> None:
    url, _ = bare

    async def run() -> tuple[list[str] | None, str | None]:
        async with BlackBoxClient(ClientConfig(base_url=url, api_key=KEY)) as client:
            return await catalogue(client), client.model_tag

    items, tag = asyncio.run(run())
    assert items is None and tag is not None  # the 404 still carried the model version


# --- faults, limits and refusals ------------------------------------------------------------


def test_under_faults_every_history_is_answered_correctly_or_listed_as_failed(
    start_teacher: StartTeacher, reference: Artifact, caplog: pytest.LogCaptureFixture
) -> None:
    hang_s = 1.0  # an injected timeout hangs this long; the client gives up after 0.6 s
    url, hits = start_teacher(
        error_rate=0.2,
        timeout_rate=0.05,
        truncate_rate=0.05,
        timeout_hang_s=hang_s,
        fault_seed=3,  # draws T....EE.CT: a timeout first, errors 6th and 7th, a truncation 9th
        rate=4,  # four requests in flight outrun 4/s: 429s are certain
        burst=4,
    )
    histories = random_histories(160, seed=4)
    ledger = Ledger()
    caplog.set_level(logging.DEBUG)
    outcomes, client = ask(
        url,
        histories,
        ledger,
        batch_size=32,  # five chunks, eight requests or more with the retries
        max_concurrency=4,
        timeout_s=0.6,
        backoff_base_s=0.02,
        jitter_seed=0,
    )
    want = expected(reference, histories)
    assert len(outcomes) == len(histories)
    answered = [i for i, o in enumerate(outcomes) if o.ok]
    assert all(o.reason for o in outcomes if not o.ok)  # a failure always says why
    assert all(outcomes[i].items == want[i] for i in answered)  # nothing the teacher did not say
    assert len(answered) >= 0.75 * len(histories)

    time.sleep(hang_s)  # hung requests end (and are charged) after the client gave up
    statuses = {hit.status for hit in recommend_hits(hits)}
    assert {200, 429, 503, 504} <= statuses  # the faults and the rate limit were all met
    assert ledger.in_flight == 0
    assert ledger.answered == len(answered)  # a truncated body is paid, not answered
    assert ledger.paid >= len(answered)
    assert ledger.paid <= usage(url)["used"] <= ledger.paid + ledger.unknown
    assert ledger.unknown > 0  # the timeouts, whose cost the client cannot know
    assert KEY not in caplog.text and KEY not in repr(client.config)


def test_faults_on_the_single_route_are_retried_too(
    start_teacher: StartTeacher, reference: Artifact
) -> None:
    url, _ = start_teacher(error_rate=0.2, truncate_rate=0.1, fault_seed=5)
    histories = random_histories(30, seed=5)
    outcomes, _ = ask(url, histories, batch=False, backoff_base_s=0.01, max_retries=10)
    assert [o.items for o in outcomes] == expected(reference, histories)


def test_retry_after_is_honoured(start_teacher: StartTeacher, reference: Artifact) -> None:
    url, hits = start_teacher(rate=1, burst=1)
    histories = random_histories(2, seed=6)
    outcomes, _ = ask(url, histories, batch_size=1, max_concurrency=1)
    assert [o.items for o in outcomes] == expected(reference, histories)
    calls = recommend_hits(hits)
    assert [hit.status for hit in calls] == [200, 429, 200]
    limited, retry = calls[1], calls[2]
    assert limited.retry_after is not None
    assert retry.arrived - limited.answered >= float(limited.retry_after)


def test_quota_exhaustion_stops_the_client(start_teacher: StartTeacher) -> None:
    url, hits = start_teacher(quota=5)

    async def run() -> tuple[list[Outcome], list[Outcome], BlackBoxClient]:
        config = ClientConfig(base_url=url, api_key=KEY, batch_size=2, max_concurrency=1)
        async with BlackBoxClient(config) as client:
            first = await client.recommend_many(random_histories(8, seed=7), K)
            again = await client.recommend_many(random_histories(3, seed=8), K)
            return first, again, client

    first, again, client = asyncio.run(run())
    assert sum(o.ok for o in first) == 4
    reasons = {o.reason for o in first + again if not o.ok}
    assert len(reasons) == 1 and next(iter(reasons)).startswith("403:")
    assert "quota exhausted" not in next(iter(reasons))  # the teacher's words are not relayed
    assert client.stopped is not None
    assert [hit.status for hit in recommend_hits(hits)] == [200, 200, 403]  # never retried
    assert usage(url)["used"] == 4


def test_a_bad_key_stops_the_client_at_once(clean: tuple[str, list[Hit]]) -> None:
    url, hits = clean
    before = len(hits)

    async def run() -> list[Outcome]:
        async with BlackBoxClient(ClientConfig(base_url=url, api_key="wrong")) as client:
            return await client.recommend_many(random_histories(5), K)

    outcomes = asyncio.run(run())
    assert all(not o.ok and o.reason and o.reason.startswith("401") for o in outcomes)
    assert len(recommend_hits(hits[before:])) == 1


def test_the_budget_hook_can_refuse_and_nothing_more_is_paid(
    clean: tuple[str, list[Hit]], reference: Artifact
) -> None:
    url, _ = clean
    used_before = usage(url)["used"]
    histories = random_histories(20, seed=9)
    ledger = Ledger(limit=10)
    outcomes, _ = ask(url, histories, ledger, batch_size=4, max_concurrency=2)
    answered = [i for i, o in enumerate(outcomes) if o.ok]
    assert len(answered) == 10  # refused chunks are split to spend what is left
    assert {o.reason for o in outcomes if not o.ok} == {BUDGET_REFUSED}
    want = expected(reference, histories)
    assert all(outcomes[i].items == want[i] for i in answered)
    assert usage(url)["used"] - used_before == ledger.paid == 10 and ledger.in_flight == 0


def test_a_budget_refusal_while_probing_the_batch_route_splits_without_deadlock(
    clean: tuple[str, list[Hit]],
) -> None:
    # batch=None: the first batch is the route probe, held under a lock; the budget refuses it
    # whole, so the split halves must not wait for that lock again.
    ledger = Ledger(limit=3)
    outcomes, _ = ask(clean[0], random_histories(8, seed=12), ledger, batch=None, batch_size=8)
    assert sum(o.ok for o in outcomes) == 3 and ledger.paid == 3


def test_malformed_bodies_are_retried_and_never_stored() -> None:
    """A stub black box that answers the wrong shape twice, then right; or always wrong."""
    bodies = iter(['{"results": [{"items": ["a"]}]}', '{"results": "oops"}'])
    app = FastAPI()

    @app.post("/v1/recommend/batch")
    async def batch(request: Request) -> Response:
        n = len((await request.json())["histories"])
        right = '{"results": [' + ",".join(['{"items": ["x", "y"]}'] * n) + "]}"
        return Response(next(bodies, right), media_type="application/json")

    @app.post("/v1/recommend")
    async def single() -> Response:
        return Response('{"items": ["x", "x"]}', media_type="application/json")  # duplicates

    with running(app) as url:
        outcomes, _ = ask(url, [["a"], ["b"]], backoff_base_s=0.01)
        assert [o.items for o in outcomes] == [["x", "y"], ["x", "y"]]
        failed, _ = ask(url, [["a"]], batch=False, max_retries=2, backoff_base_s=0.01)
    assert failed[0].reason == "malformed body (after 3 attempts)"


def test_connection_refused_fails_uncharged() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ledger = Ledger()
    outcomes, _ = ask(
        f"http://127.0.0.1:{port}", [["a"]], ledger, max_retries=1, backoff_base_s=0.01
    )
    assert outcomes[0].reason is not None and "ConnectError" in outcomes[0].reason
    assert ledger.free == 2 and ledger.paid == ledger.unknown == 0


def test_catalogue_errors_are_raised_not_returned(clean: tuple[str, list[Hit]]) -> None:
    async def run() -> None:
        async with BlackBoxClient(ClientConfig(base_url=clean[0], api_key="wrong")) as client:
            await catalogue(client)

    with pytest.raises(BlackBoxError, match="401"):
        asyncio.run(run())


@pytest.mark.parametrize("batch", [None, False])
def test_a_raising_budget_hook_cancels_the_call_and_propagates(
    clean: tuple[str, list[Hit]], batch: bool | None
) -> None:
    class Broken(Ledger):
        async def on_send(self, n_histories: int) -> bool:
            if self.sends >= 2:
                raise RuntimeError("budget store unreachable")
            return await super().on_send(n_histories)

    ledger = Broken()
    with pytest.raises(RuntimeError, match="budget store unreachable"):
        histories = random_histories(40, seed=10)
        ask(clean[0], histories, ledger, batch=batch, batch_size=4, max_concurrency=2)
    assert ledger.sends == 2 and ledger.in_flight == 0  # every allowed send was settled


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def limited(retry_after: str | None = None) -> HTTPResponse:
        headers = {} if retry_after is None else {"retry-after": retry_after}
        return HTTPResponse(429, "Too Many Requests", headers)

    in_30_s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= _retry_after(limited(in_30_s), 300) <= 30
    assert _retry_after(limited("7"), 300) == 7
    assert _retry_after(limited("7"), 5) == 5  # capped
    assert _retry_after(limited("soon"), 5) is None
    assert _retry_after(limited(), 5) is None


def test_charging_rule_follows_the_black_box_contract() -> None:
    assert charged_for(200) and charged_for(504)  # answered, or answered and lost: billed
    assert charged_for(503) is False  # the contract refunds its 503s
    assert charged_for(429) is False and charged_for(422) is False and charged_for(403) is False
    assert charged_for(500) is None and charged_for(502) is None  # may have been charged


def test_an_error_answer_relays_its_status_never_the_hosts_words() -> None:
    """Whatever host a URL names chooses its error text (an internal service's secrets, say);
    the reason kept, which ends up in a job's record, is the status and our own words."""
    secret = "ami-id i-0cafe SECRET-FROM-THE-HOST"
    app = FastAPI()

    @app.post("/v1/recommend")
    async def single(request: Request) -> Response:
        history = (await request.json())["history"]
        status = {"a": 400, "b": 404, "c": 422}[history[0]]
        body = f'{{"detail": "{secret}"}}'
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/v1/items")
    async def items() -> Response:
        return Response(f'{{"detail": "{secret}"}}', status_code=401)

    with running(app) as url:
        outcomes, _ = ask(url, [["a"], ["b"], ["c"]], batch=False)

        async def listing() -> None:
            async with BlackBoxClient(ClientConfig(base_url=url, api_key=KEY)) as client:
                await catalogue(client)

        with pytest.raises(BlackBoxError) as refused:
            asyncio.run(listing())
    assert [o.reason for o in outcomes] == [
        "400: Bad Request",
        "404: Not Found",
        "422: the black box refused the request's content",
    ]
    assert str(refused.value) == "401: the black box refused the API key"
