"""`/v1/students`: the trained students, their reports, and their top-k endpoints.

`recommend` and `recommend/batch` answer the black box's own contract (DESIGN.md section 4),
so anything written against the teacher (the extractor included) can query a student instead.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Response

from seqrec.serving.contract import (
    BatchRecommendation,
    BatchRecommendRequest,
    Recommendation,
    RecommendRequest,
)
from service.api.deps import SettingsDep, StoreDep, StudentsDep, TenantDep
from service.api.schemas import ErrorBody, StudentsPage, StudentView
from service.db.models import Student
from service.errors import Gone, NotFound


@asynccontextmanager
async def _stop_batchers(app: FastAPI) -> AsyncIterator[None]:
    """The loaded students' batcher tasks end with the app instead of outliving its loop."""
    yield
    await app.state.students.close()


router = APIRouter(
    prefix="/v1/students",
    tags=["students"],
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422)},
    lifespan=_stop_batchers,
)
MODEL_VERSION = "X-Model-Version"


def owned_student(student_id: str, tenant: TenantDep, store: StoreDep) -> Student:
    """The caller's student (404 otherwise); a plain def, so the query runs off the event loop."""
    return store.get_student(tenant, student_id)


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
    response_model_exclude_none=True,
    responses={410: {"model": ErrorBody}},
)
async def recommend(
    body: RecommendRequest,
    response: Response,
    row: OwnedStudent,
    students: StudentsDep,
    settings: SettingsDep,
) -> Recommendation:
    """The top-k unseen items for one history (oldest item first), best first."""
    async with students.use(row, settings) as student:
        response.headers[MODEL_VERSION] = student.version
        items = await student.recommend([body.history], body.k, batch=False, settings=settings)
    return Recommendation(items=items[0])


@router.post(
    "/{student_id}/recommend/batch",
    response_model=BatchRecommendation,
    response_model_exclude_none=True,
    responses={410: {"model": ErrorBody}},
)
async def recommend_batch(
    body: BatchRecommendRequest,
    response: Response,
    row: OwnedStudent,
    students: StudentsDep,
    settings: SettingsDep,
) -> BatchRecommendation:
    """Several histories in one request, answered exactly as one by one."""
    async with students.use(row, settings) as student:
        response.headers[MODEL_VERSION] = student.version
        rankings = await student.recommend(body.histories, body.k, batch=True, settings=settings)
    return BatchRecommendation(results=[Recommendation(items=items) for items in rankings])
