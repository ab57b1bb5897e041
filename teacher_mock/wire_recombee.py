"""Recombee's shape: detail views written under a user id, then that user's recommendations.

Session mode: the history the model ranks is the one the server stored
(`teacher_mock.sessions`), so a client writes a query's items first (`POST /batch/`, free, like
any write) and then asks for the user (`GET /recomms/users/{id}/items/`, one paid answer). Every
route lives under the database id `recmimic` and needs a signed URL
(`teacher_mock.foreign_auth.RecombeeSignature`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from teacher_mock.errors import NotFound
from teacher_mock.routing import MeteredKey, TeacherDep, json_answer, read_json, stored_history
from teacher_mock.schemas import StrictBody

DATABASE = "recmimic"
MAX_BATCH_REQUESTS = 10_000  # Recombee's own limit per batch


class DetailView(StrictBody):
    userId: str = Field(min_length=1)
    itemId: str
    timestamp: float | str | None = None  # unix seconds or ISO 8601; the batch order rules


class BatchEntry(StrictBody):
    method: Literal["POST"]
    path: Literal["/detailviews/"]
    params: DetailView


class Batch(StrictBody):
    requests: list[BatchEntry] = Field(min_length=1, max_length=MAX_BATCH_REQUESTS)


class Recomm(BaseModel):
    id: str


class RecommsAnswer(BaseModel):
    recommId: str
    recomms: list[Recomm]
    numberNextRecommsCalls: int = 0


def add_routes(app: FastAPI) -> None:
    """Recombee's batch write, user recommendations, user deletion and item listing."""

    @app.post(f"/{DATABASE}/batch/")
    async def batch(request: Request, teacher: TeacherDep, key: MeteredKey) -> list[dict[str, Any]]:
        """Append each detail view's item to its user's history, in the order given; one
        unknown item refuses the whole batch and nothing is stored."""
        body = await read_json(request, Batch, teacher.settings.max_body_bytes)
        views = [entry.params for entry in body.requests]
        teacher.check_items([view.itemId for view in views], "requests")
        for view in views:
            teacher.sessions.extend(view.userId, [view.itemId])
        return [{"code": 201, "json": "ok"} for _ in views]

    @app.get(f"/{DATABASE}/recomms/users/{{user_id}}/items/", response_model=RecommsAnswer)
    async def recommend(
        teacher: TeacherDep,
        key: MeteredKey,
        user_id: str,
        count: Annotated[int, Query(ge=1)] = 10,
    ) -> Response:
        """The model's top `count` for the user's stored history; one paid answer."""
        history = stored_history(teacher, user_id)
        answer = await teacher.recommend(key, [history], count, batch=False)
        recomms = [Recomm(id=item) for item in answer.results[0].items]
        payload = RecommsAnswer(recommId=str(uuid4()), recomms=recomms)
        return json_answer(payload.model_dump(), answer.truncate)

    @app.delete(f"/{DATABASE}/users/{{user_id}}")
    async def delete_user(teacher: TeacherDep, key: MeteredKey, user_id: str) -> str:
        """Forget the user and its interactions."""
        if not teacher.sessions.forget(user_id):
            raise NotFound(f"user {user_id!r} not found")
        return "ok"

    @app.get(f"/{DATABASE}/items/list/")
    async def list_items(
        teacher: TeacherDep,
        key: MeteredKey,
        offset: Annotated[int, Query(ge=0)] = 0,
        count: Annotated[int, Query(ge=1)] = 100,
    ) -> list[str]:
        """A page of the catalogue's ids (`count` capped at the server's page size); no total,
        and an empty list past the end."""
        return teacher.catalogue.page(offset, min(count, teacher.settings.items_page_max))
