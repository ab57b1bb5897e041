"""Session and item modes, HMAC-signed URLs and SigV4, end to end: the example profiles of
examples/profiles against the mock teacher speaking those APIs' shapes on real ports.

The same model answers behind recmimic's own wire, so a session-mode extraction must record
exactly the answers recmimic's contract gives for the same histories, and an item-mode one the
answers for each query's most recent item. The teacher's quota book is the witness of what
was paid: answers only, never the writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request
from tiny_teacher import save_tiny_teacher

from extractor.client import BlackBoxClient, ClientConfig
from extractor.config import ExtractConfig
from extractor.errors import BlackBoxError
from extractor.probeset import read_probe_set
from extractor.profiles import AnswerSpec, CatalogueSpec, LimitsSpec, load_profile
from extractor.run import extract
from seqrec.data.loading import load_dataset
from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

DATASET = "synthetic:150:60"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "profiles"
KEYS = {
    "recmimic": "modes-key",
    "recombee": "recombee-private-token",
    "algolia": "algolia-search-key",
    "personalize": "AKIDMODES:aws-secret-access-key",
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, FastAPI]]]:
    """The same model behind each wire: (URL, app) by wire name."""
    pytest.importorskip("botocore", reason="the aws extra is not installed")
    item_ids = [str(raw) for raw in load_dataset(DATASET).item_ids]
    model_dir = save_tiny_teacher(tmp_path_factory.mktemp("teacher"), item_ids)
    served, contexts = {}, []
    for wire, key in KEYS.items():
        app = create_app(TeacherSettings(model_dir=model_dir, api_keys=[key], wire=wire))
        context = running(app)
        served[wire] = (context.__enter__(), app)
        contexts.append(context)
    yield served
    for context in contexts:
        context.__exit__(None, None, None)


def paid(app: FastAPI, wire: str) -> int:
    return app.state.teacher.quota.usage(KEYS[wire]).used


def run(url: str, wire: str, out: Path, **changes: Any) -> Any:
    settings: dict[str, Any] = dict(source="seeded", dataset=DATASET, prefixes=2, k=10)
    settings.update({"budget": 1000, "api_key": KEYS[wire], **changes})
    config = ExtractConfig(teacher_url=url, out=out, **settings)
    return asyncio.run(extract(config, progress=False)), config


@pytest.mark.parametrize("wire", ["recombee", "personalize"])
def test_a_session_profile_records_what_the_history_itself_would_get(
    servers: dict[str, tuple[str, FastAPI]], tmp_path: Path, wire: str
) -> None:
    own_url, _ = servers["recmimic"]
    own, _ = run(own_url, "recmimic", tmp_path / "own")
    url, app = servers[wire]
    before = paid(app, wire)
    cache = str(tmp_path / "answers.sqlite3")
    profile = str(EXAMPLES / f"{wire}.toml")
    summary, _ = run(url, wire, tmp_path / "first", api_profile=profile, cache=cache)
    assert summary.stopped is None and summary.failed == 0
    assert summary.paid == own.paid == paid(app, wire) - before  # the writes cost nothing
    mine, theirs = read_probe_set(tmp_path / "first"), read_probe_set(tmp_path / "own")
    assert mine.column("history").equals(theirs.column("history"))
    assert mine.column("items").equals(theirs.column("items"))
    assert mine.column("view_items").equals(theirs.column("view_items"))
    sessions = app.state.teacher.sessions
    assert len(sessions) == (0 if wire == "recombee" else summary.paid)  # cleanup where offered
    again, _ = run(url, wire, tmp_path / "again", api_profile=profile, cache=cache)
    assert again.paid == 0 and paid(app, wire) - before == summary.paid


def test_an_item_profile_asks_each_querys_most_recent_item_in_batches(
    servers: dict[str, tuple[str, FastAPI]], tmp_path: Path
) -> None:
    url, app = servers["algolia"]
    before = paid(app, "algolia")
    algolia = load_profile(str(EXAMPLES / "algolia.toml"))
    priced = algolia.model_copy(update={"limits": LimitsSpec(cost_per_call=0.25)})
    summary, _ = run(url, "algolia", tmp_path / "items", api_profile=priced, batch_size=50)
    probes = read_probe_set(tmp_path / "items")
    histories = probes.column("history").to_pylist()
    assert summary.stopped is None and probes.num_rows > 0
    assert all(len(history) == 1 for history in histories)
    assert summary.paid == paid(app, "algolia") - before == len({h[0] for h in histories})
    assert summary.calls < summary.paid  # several seed items per call (50 at most)
    assert summary.cost == summary.calls * 0.25
    own_url, _ = servers["recmimic"]
    own, _ = run(own_url, "recmimic", tmp_path / "own", max_history=1)
    theirs = read_probe_set(tmp_path / "own")
    assert probes.column("history").equals(theirs.column("history"))
    assert probes.column("items").equals(theirs.column("items"))


@pytest.mark.parametrize("wire", ["recombee", "algolia"])
def test_a_data_free_run_reads_the_whole_catalogue_through_the_profile(
    servers: dict[str, tuple[str, FastAPI]], tmp_path: Path, wire: str
) -> None:
    """Recombee's listing is a bare array paged by offset and count until an empty page,
    Algolia's browse pages by cursor; both are signed or keyed as every other call."""
    url, app = servers[wire]
    summary, _ = run(
        url,
        wire,
        tmp_path / "free",
        source="autoregressive",
        dataset=None,
        n_sequences=8,
        max_length=6,
        budget=60,
        api_profile=str(EXAMPLES / f"{wire}.toml"),
    )
    listed = app.state.teacher.catalogue
    written = json.loads((tmp_path / "free" / "catalogue.json").read_text())
    assert summary.paid > 0 and summary.stopped in (None, "budget exhausted")
    assert sorted(written) == sorted(listed.item_ids)
    if wire == "algolia":
        probes = read_probe_set(tmp_path / "free")
        assert all(len(h) == 1 for h in probes.column("history").to_pylist())


def test_a_bad_signature_or_key_stops_the_run_before_any_paid_answer(
    servers: dict[str, tuple[str, FastAPI]], tmp_path: Path
) -> None:
    for wire, key in [
        ("recombee", "not-the-token"),
        ("personalize", "AKIDMODES:wrong-secret"),
        ("algolia", "wrong-key"),
    ]:
        url, app = servers[wire]
        before = paid(app, wire)
        try:
            profile = str(EXAMPLES / f"{wire}.toml")
            summary, _ = run(url, wire, tmp_path / wire, api_profile=profile, api_key=key)
            why = summary.stopped
        except BlackBoxError as exc:  # refused while listing the catalogue
            why = str(exc)
        assert why is not None and ("401" in why or "403" in why)
        assert key not in why and paid(app, wire) == before


def test_a_session_write_that_fails_midway_is_written_again_under_a_new_id(
    tmp_path: Path,
) -> None:
    """A 500 after some events were stored must not leave them twice in the session asked:
    the whole history is written again under a fresh id, and the broken session is never
    asked."""
    written: dict[str, list[str]] = {}
    asked: list[str] = []
    failures = iter([True])  # the second write call of the first session fails
    stub = FastAPI()

    @stub.post("/events")
    async def events(body: dict[str, Any]) -> Any:
        session = body["sessionId"]
        if session in written and next(failures, False):
            written[session] += ["half-stored"]
            raise HTTPException(500)
        written.setdefault(session, []).extend(e["itemId"] for e in body["eventList"])
        return {}

    @stub.post("/recommendations")
    async def recommendations(body: dict[str, Any]) -> Any:
        asked.append(body["userId"])
        return {"itemList": [{"itemId": item} for item in written[body["userId"]][-3:]]}

    profile = load_profile(str(EXAMPLES / "personalize.toml"))
    history = [f"i{n}" for n in range(25)]
    with running(stub) as url:

        async def ask() -> list[Any]:
            config = ClientConfig(base_url=url, api_key="AK:SECRET", profile=profile)
            async with BlackBoxClient(config) as client:
                return await client.recommend_many([history], 3)

        [outcome] = asyncio.run(ask())
    assert outcome.items == ["i22", "i23", "i24"]
    broken, whole = list(written)
    assert written[whole] == history and asked == [whole]
    assert written[broken][-1] == "half-stored" and broken != whole


def test_scores_a_profile_names_are_kept_in_the_probe_set_and_the_cache(
    tmp_path: Path,
) -> None:
    """Scores come with the answers, are written beside them, and a rerun from the cache
    writes the same scores without paying; a profile that misreads them stops after one."""
    item_ids = [str(raw) for raw in load_dataset(DATASET).item_ids]
    model_dir = save_tiny_teacher(tmp_path / "teacher", item_ids)
    settings = TeacherSettings(
        model_dir=model_dir, api_keys=[KEYS["algolia"]], wire="algolia", scores=True
    )
    algolia = load_profile(str(EXAMPLES / "algolia.toml"))
    with_scores = AnswerSpec(items=algolia.answer.items, scores="results[*].hits[*]._score")
    scored = algolia.model_copy(update={"answer": with_scores})
    cache = str(tmp_path / "answers.sqlite3")
    app = create_app(settings)
    with running(app) as url:
        first, _ = run(url, "algolia", tmp_path / "first", api_profile=scored, cache=cache)
        again, _ = run(url, "algolia", tmp_path / "again", api_profile=scored, cache=cache)
        plain, _ = run(url, "algolia", tmp_path / "plain", api_profile=algolia, cache=cache)
        wrong = scored.model_copy(
            update={"answer": AnswerSpec(items=algolia.answer.items, scores="results[*].score")}
        )
        before = paid(app, "algolia")
        misread, _ = run(url, "algolia", tmp_path / "wrong", api_profile=wrong, k=9)
        assert "answer.scores 'results[*].score' did not find" in str(misread.stopped)
        assert paid(app, "algolia") - before == misread.paid == 1
        rows = read_probe_set(tmp_path / "first").slice(0, 5).to_pylist()
        asked = [
            {"indexName": "items", "model": "related-products", "objectID": row["history"][0]}
            for row in rows
        ]
        headers = {"X-Algolia-Application-Id": "RECMIMIC", "X-Algolia-API-Key": KEYS["algolia"]}
        answer = httpx.post(
            f"{url}/1/indexes/*/recommendations", json={"requests": asked}, headers=headers
        ).json()
    for row, result in zip(rows, answer["results"], strict=True):
        assert row["items"] == [hit["objectID"] for hit in result["hits"]]
        want = np.asarray([hit["_score"] for hit in result["hits"]], dtype=np.float32)
        assert np.array_equal(np.asarray(row["scores"], dtype=np.float32), want)
    probes = read_probe_set(tmp_path / "first")
    assert first.paid > 0 and again.paid == plain.paid == 0
    assert probes.column("scores").equals(read_probe_set(tmp_path / "again").column("scores"))
    assert "scores" not in read_probe_set(tmp_path / "plain").column_names


def test_events_written_on_one_host_and_asked_on_another_are_signed_for_each(
    servers: dict[str, tuple[str, FastAPI]], tmp_path: Path
) -> None:
    """AWS takes PutEvents on one host and GetRecommendations on another: a call's base_url
    sends it there, signed for that host (a signature for the wrong host is refused)."""
    runtime_url, runtime = servers["personalize"]
    settings = runtime.state.teacher.settings
    events = create_app(settings)
    events.state.teacher.sessions = runtime.state.teacher.sessions  # one service, two hosts
    took: list[str] = []

    @events.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        took.append(request.url.path)
        return await call_next(request)

    personalize = load_profile(str(EXAMPLES / "personalize.toml"))
    session = personalize.session
    assert session is not None
    with running(events) as events_url:
        write = session.write.model_copy(update={"base_url": events_url})
        split = personalize.model_copy(
            update={"session": session.model_copy(update={"write": write})}
        )
        before = paid(runtime, "personalize")
        summary, _ = run(runtime_url, "personalize", tmp_path / "split", api_profile=split)
    assert summary.stopped is None and summary.failed == 0 and summary.paid > 0
    assert paid(runtime, "personalize") - before == summary.paid
    assert paid(events, "personalize") == 0  # it only took the events, every one of them
    assert set(took) == {"/events"} and len(took) >= summary.paid


def test_the_summary_counts_answered_ids_the_listing_lacks(
    servers: dict[str, tuple[str, FastAPI]], tmp_path: Path
) -> None:
    """A catalogue of half the items (here a file): every id the answers name beyond it is
    counted once in summary.json (the student still learns them); the whole listing, none."""
    url, _ = servers["algolia"]
    algolia = load_profile(str(EXAMPLES / "algolia.toml"))
    item_ids = [str(raw) for raw in load_dataset(DATASET).item_ids]
    (tmp_path / "half.txt").write_text("\n".join(item_ids[::2]))
    half = algolia.model_copy(update={"catalogue": CatalogueSpec(file=tmp_path / "half.txt")})
    summary, _ = run(url, "algolia", tmp_path / "half", api_profile=half)
    probes = read_probe_set(tmp_path / "half")
    named = {i for items in probes.column("items").to_pylist() for i in items}
    named |= {i for views in probes.column("view_items").to_pylist() for v in views for i in v}
    assert summary.unlisted_items == len(named - set(item_ids[::2])) > 0
    saved = json.loads((tmp_path / "half" / "summary.json").read_text())
    assert saved["unlisted_items"] == summary.unlisted_items
    whole, _ = run(url, "algolia", tmp_path / "whole", api_profile=algolia)
    assert whole.unlisted_items == 0
