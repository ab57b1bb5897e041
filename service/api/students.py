"""`/v1/students`: the trained students, their reports, and their top-k endpoints.

`recommend` and `recommend/batch` answer the black box's own contract (DESIGN.md section 4),
so anything written against the teacher (the extractor included) can query a student instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from seqrec.serving.contract import (
    BatchRecommendation,
    BatchRecommendRequest,
    Recommendation,
    RecommendRequest,
)
from service.api.deps import SettingsDep, StoreDep, StudentsDep, TenantDep
from service.api.schemas import ErrorBody, StudentsPage, StudentView
from service.errors import Gone, NotFound

router = APIRouter(
    prefix="/v1/students",
    tags=["students"],
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422)},
)
MODEL_VERSION = "X-Model-Version"


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
def recommend(
    student_id: str,
    body: RecommendRequest,
    response: Response,
    tenant: TenantDep,
    store: StoreDep,
    students: StudentsDep,
    settings: SettingsDep,
) -> Recommendation:
    """The top-k unseen items for one history (oldest item first), best first."""
    student = students.get(store.get_student(tenant, student_id))
    response.headers[MODEL_VERSION] = student.version
    items = student.recommend([body.history], body.k, batch=False, settings=settings)[0]
    return Recommendation(items=items)


@router.post(
    "/{student_id}/recommend/batch",
    response_model=BatchRecommendation,
    response_model_exclude_none=True,
    responses={410: {"model": ErrorBody}},
)
def recommend_batch(
    student_id: str,
    body: BatchRecommendRequest,
    response: Response,
    tenant: TenantDep,
    store: StoreDep,
    students: StudentsDep,
    settings: SettingsDep,
) -> BatchRecommendation:
    """Several histories in one request, answered exactly as one by one."""
    student = students.get(store.get_student(tenant, student_id))
    response.headers[MODEL_VERSION] = student.version
    rankings = student.recommend(body.histories, body.k, batch=True, settings=settings)
    return BatchRecommendation(results=[Recommendation(items=items) for items in rankings])
