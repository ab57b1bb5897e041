"""`/v1/students`: the trained students, their reports, and their top-k endpoints.

`recommend` and `recommend/batch` answer the black box's own contract (DESIGN.md section 4),
so anything written against the teacher (the extractor included) can query a student instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from seqrec.serving.contract import (
    BatchRecommendation,
    BatchRecommendRequest,
    Recommendation,
    RecommendRequest,
)
from service.api.cache import TtlCache
from service.api.deps import KeyFirstRoute, SettingsDep, StoreDep, TenantDep
from service.api.schemas import ErrorBody, StudentsPage, StudentView
from service.db.models import Student
from service.errors import Gone, NotFound
from service.settings import ServiceSettings
from service.store import JobStore
from service.students import StudentModels


@asynccontextmanager
async def _stop_batchers(app: FastAPI) -> AsyncIterator[None]:
    """The loaded students' batcher tasks end with the app instead of outliving its loop."""
    yield
    await app.state.students.close()


router = APIRouter(
    prefix="/v1/students",
    tags=["students"],
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422)},
    route_class=KeyFirstRoute,
    lifespan=_stop_batchers,
)
MODEL_VERSION = "X-Model-Version"


async def owned_student(student_id: str, tenant: TenantDep, request: Request) -> Student:
    """The caller's student (404 otherwise): cached per (tenant, id), so another tenant's key
    never finds it; a miss queries the database off the event loop."""
    owners: TtlCache[tuple[str, str], Student] = request.app.state.owners
    student = owners.get((tenant, student_id))
    if student is None:
        store: JobStore = request.app.state.store
        student = await asyncio.to_thread(store.get_student, tenant, student_id)
        owners.put((tenant, student_id), student)
    return student


OwnedStudent = Annotated[Student, Depends(owned_student)]


@router.get("")
def list_students(
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, description="capped at the server's page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> StudentsPage:
    """This key's students, newest first."""
    limit = min(limit, settings.page_max)
    students = store.list_students(tenant, limit + 1, offset)
    items = [StudentView.model_validate(s) for s in students[:limit]]
    return StudentsPage(items=items, next_offset=offset + limit if len(students) > limit else None)


@router.get("/{student_id}")
def get_student(student_id: str, tenant: TenantDep, store: StoreDep) -> StudentView:
    return StudentView.model_validate(store.get_student(tenant, student_id))


@router.get("/{student_id}/report", responses={410: {"model": ErrorBody}})
def get_report(student_id: str, tenant: TenantDep, store: StoreDep) -> dict[str, Any]:
    """The evaluation report the worker wrote for this student (JSON)."""
    student = store.get_student(tenant, student_id)
    if student.report_path is None:
        raise NotFound(f"student {student_id} has no report")
    try:
        report = json.loads(Path(student.report_path).read_text())
    except (OSError, ValueError):
        report = None
    if not isinstance(report, dict):
        raise Gone(f"student {student_id}'s report cannot be read")
    return report


@router.post(
    "/{student_id}/recommend",
    response_model=Recommendation,
    responses={410: {"model": ErrorBody}},
)
async def recommend(body: RecommendRequest, row: OwnedStudent, request: Request) -> Response:
    """The top-k unseen items for one history (oldest item first), best first."""
    students, settings = _serving(request)
    async with students.use(row, settings) as student:
        items = await student.recommend([body.history], body.k, batch=False, settings=settings)
    return _answer({"items": items[0]}, student.version)


@router.post(
    "/{student_id}/recommend/batch",
    response_model=BatchRecommendation,
    responses={410: {"model": ErrorBody}},
)
async def recommend_batch(
    body: BatchRecommendRequest, row: OwnedStudent, request: Request
) -> Response:
    """Several histories in one request, answered exactly as one by one."""
    students, settings = _serving(request)
    async with students.use(row, settings) as student:
        rankings = await student.recommend(body.histories, body.k, batch=True, settings=settings)
    return _answer({"results": [{"items": items} for items in rankings]}, student.version)


def _serving(request: Request) -> tuple[StudentModels, ServiceSettings]:
    """What the top-k routes need, read off the app directly: each `Depends` costs every
    request FastAPI's dependency solving, which profiled as the largest share of these routes."""
    return request.app.state.students, request.app.state.settings


def _answer(payload: dict[str, Any], version: str) -> Response:
    """The body encoded once, here: the declared `response_model` documents it without FastAPI
    validating and re-encoding what is only lists of strings."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(body, media_type="application/json", headers={MODEL_VERSION: version})
