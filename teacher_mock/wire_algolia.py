"""Algolia Recommend's shape: related products of one seed item, several seeds per call.

Item mode: each request entry names one item (`objectID`) and gets the model's top
`maxRecommendations` for the one-item history `[objectID]`; a call of n entries is n paid
answers, like recmimic's batch route. The catalogue is browsed with an opaque cursor. Keys
travel in Algolia's two headers (`teacher_mock.foreign_auth.AlgoliaKeys`).

`_score` is the model's own score when the teacher is run with `scores` on, otherwise
`100 * (k - rank) / k` for rank 0.. of k asked: Algolia's 0-100 scale, best first, carrying no
more than the order does.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from teacher_mock.errors import InvalidRequest
from teacher_mock.routing import MeteredKey, TeacherDep, answer_scores, json_answer, read_json
from teacher_mock.schemas import StrictBody

INDEX = "items"
MODEL = "related-products"
SCORE_SCALE = 100.0
BROWSE_PAGE = 1000  # Algolia's default hitsPerPage for browse
_CURSOR_PREFIX = "offset:"


class RecommendRequest(StrictBody):
    indexName: Literal["items"]
    model: Literal["related-products"]
    objectID: str
    maxRecommendations: int = Field(default=10, ge=1)


class RecommendBody(StrictBody):
    requests: list[RecommendRequest] = Field(min_length=1)


class BrowsePage(BaseModel):
    hits: list[dict[str, str]]
    cursor: str | None = None  # absent on the last page


def add_routes(app: FastAPI) -> None:
    """Algolia's recommendations route and its index browse route."""

    @app.post("/1/indexes/*/recommendations")
    async def recommendations(request: Request, teacher: TeacherDep, key: MeteredKey) -> Response:
        """One result per request entry, in order; an unknown objectID refuses the whole call."""
        body = await read_json(request, RecommendBody, teacher.settings.max_body_bytes)
        entries = body.requests
        if len(entries) > teacher.settings.max_batch:
            raise InvalidRequest(
                f"{len(entries)} requests in one call; at most {teacher.settings.max_batch}"
            )
        for i, entry in enumerate(entries):
            teacher.check_items([entry.objectID], f"requests[{i}].objectID")
            if entry.maxRecommendations > teacher.max_k:
                raise InvalidRequest(
                    f"requests[{i}].maxRecommendations must be between 1 and {teacher.max_k}"
                )
        # One charge and one forward pass for the call: rank the largest k, cut each entry's.
        k = max(entry.maxRecommendations for entry in entries)
        answer = await teacher.recommend(key, [[e.objectID] for e in entries], k, batch=True)
        results = []
        for entry, result in zip(entries, answer.results, strict=True):
            cut = entry.maxRecommendations
            scores = answer_scores(result, cut, SCORE_SCALE)[:cut]
            hits = [
                {"objectID": i, "_score": s}
                for i, s in zip(result.items[:cut], scores, strict=True)
            ]
            results.append({"hits": hits})
        return json_answer({"results": results}, answer.truncate)

    @app.get(
        f"/1/indexes/{INDEX}/browse", response_model=BrowsePage, response_model_exclude_none=True
    )
    async def browse(
        teacher: TeacherDep,
        key: MeteredKey,
        cursor: str | None = None,
        hits_per_page: Annotated[int, Query(alias="hitsPerPage", ge=1)] = BROWSE_PAGE,
    ) -> BrowsePage:
        """A page of the catalogue's ids and the cursor of the next page (none on the last)."""
        offset = 0 if cursor is None else _offset(cursor, len(teacher.catalogue))
        page = teacher.catalogue.page(offset, min(hits_per_page, teacher.settings.items_page_max))
        end = offset + len(page)
        following = _cursor(end) if end < len(teacher.catalogue) else None
        return BrowsePage(hits=[{"objectID": item} for item in page], cursor=following)


def _cursor(offset: int) -> str:
    """Opaque to clients, as Algolia's are: they pass it back and never read it."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{offset}".encode()).decode()


def _offset(cursor: str, size: int) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("ascii")
    except (UnicodeError, binascii.Error, ValueError):
        text = ""
    number = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not number.isdigit() or not 0 < int(number) < size:
        raise InvalidRequest("invalid cursor: pass back the cursor of the previous page")
    return int(number)
