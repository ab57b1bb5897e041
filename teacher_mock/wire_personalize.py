"""Amazon Personalize's shape: PutEvents, then GetRecommendations for the user.

Session mode: `POST /events` appends up to 10 items to the history stored under the user id (or
the session id when there is none), free like any write; `POST /recommendations` answers the
model's top `numResults` for that user's stored history, one paid answer. Requests are signed
with AWS Signature Version 4 (`teacher_mock.foreign_auth.SigV4Signature`). There is no
catalogue route of its own, as in Personalize; recmimic's `/v1/items` takes the same signature.

`score` is the model's own score when the teacher is run with `scores` on, otherwise
`(k - rank) / k` for rank 0.. of k asked: best first, carrying no more than the order does.
"""

from __future__ import annotations

from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import Field

from teacher_mock.errors import InvalidRequest
from teacher_mock.routing import (
    MeteredKey,
    TeacherDep,
    answer_scores,
    json_answer,
    read_json,
    stored_history,
)
from teacher_mock.schemas import StrictBody

MAX_EVENTS = 10  # PutEvents' own limit per call
MAX_RESULTS = 500  # GetRecommendations' own ceiling on numResults
DEFAULT_RESULTS = 25


class Event(StrictBody):
    eventType: str
    itemId: str
    sentAt: float


class PutEvents(StrictBody):
    trackingId: str
    sessionId: str = Field(min_length=1)
    userId: str | None = Field(default=None, min_length=1)
    eventList: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)


class GetRecommendations(StrictBody):
    campaignArn: str
    userId: str = Field(min_length=1)
    numResults: int | None = None  # 25, or the largest the server allows when that is less


def add_routes(app: FastAPI) -> None:
    """Personalize's PutEvents and GetRecommendations."""

    @app.post("/events")
    async def put_events(request: Request, teacher: TeacherDep, key: MeteredKey) -> dict[str, str]:
        """Append the events' items, in order; one unknown item refuses them all."""
        body = await read_json(request, PutEvents, teacher.settings.max_body_bytes)
        items = [event.itemId for event in body.eventList]
        teacher.check_items(items, "eventList")
        teacher.sessions.extend(body.userId or body.sessionId, items)
        return {}

    @app.post("/recommendations")
    async def recommendations(request: Request, teacher: TeacherDep, key: MeteredKey) -> Response:
        """The model's top `numResults` for the user's stored history; one paid answer."""
        body = await read_json(request, GetRecommendations, teacher.settings.max_body_bytes)
        ceiling = min(MAX_RESULTS, teacher.max_k)
        k = min(DEFAULT_RESULTS, ceiling) if body.numResults is None else body.numResults
        if not 1 <= k <= ceiling:
            raise InvalidRequest(f"numResults must be between 1 and {ceiling}, got {k}")
        history = stored_history(teacher, body.userId)
        answer = await teacher.recommend(key, [history], k, batch=False)
        result = answer.results[0]
        scores = answer_scores(result, k, 1.0)
        payload = {
            "itemList": [
                {"itemId": i, "score": s} for i, s in zip(result.items, scores, strict=True)
            ],
            "recommendationId": str(uuid4()),
        }
        return json_answer(payload, answer.truncate)
