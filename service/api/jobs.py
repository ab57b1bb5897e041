"""`/v1/jobs`: start, list, read and cancel extraction jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from extractor.destinations import DestinationRefused
from service.api.deps import KeyFirstRoute, SettingsDep, StoreDep, TenantDep
from service.api.schemas import ErrorBody, JobRequest, JobsPage, JobView, Status, storable
from service.errors import Invalid
from service.settings import ServiceSettings

log = logging.getLogger("service.jobs")
router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422)},
    route_class=KeyFirstRoute,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": JobView, "description": "Replay of an Idempotency-Key: the same job"},
        409: {"model": ErrorBody, "description": "Idempotency-Key reused with another body"},
    },
)
def create_job(
    body: JobRequest,
    response: Response,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JobView:
    """Queue an extraction job and return it at once (201).

    With an `Idempotency-Key` header, a retry with the same body returns the same job with 200;
    the same key with a different body is refused with 409.
    """
    _check_limits(body, settings)
    _check_destination(body, settings)
    if idempotency_key is not None:
        _check_storable("header.Idempotency-Key", idempotency_key)
    job, created = store.create_job(
        tenant, body.stored(), body.teacher_api_key.get_secret_value(), idempotency_key
    )
    if created:
        log.info(
            "job queued",
            extra={"job": job.id, "tenant": tenant, "budget": body.budget, "source": body.source},
        )
    else:
        response.status_code = status.HTTP_200_OK
    return JobView.model_validate(job)


def _check_limits(body: JobRequest, settings: ServiceSettings) -> None:
    if body.budget > settings.max_budget:
        raise Invalid(f"body.budget: at most {settings.max_budget}, got {body.budget}")
    if body.evaluation_budget is not None and body.evaluation_budget > settings.max_budget:
        raise Invalid(
            f"body.evaluation_budget: at most {settings.max_budget}, got {body.evaluation_budget}"
        )
    if body.k > settings.max_k:
        raise Invalid(f"body.k: at most {settings.max_k}, got {body.k}")


def _check_destination(body: JobRequest, settings: ServiceSettings) -> None:
    """Refuse a teacher URL whose host is, or resolves now to, an address jobs may not reach.

    The worker checks again at every connection (a name may resolve elsewhere later); this
    check tells the caller at once, naming the setting that would allow it.
    """
    try:
        settings.teacher_destinations().check_url(body.teacher_url)
    except DestinationRefused as exc:
        raise Invalid(f"body.teacher_url: {exc}") from None


def _check_storable(where: str, value: str) -> None:
    """The body's strings are checked by `JobRequest`; a header stored too is checked here."""
    try:
        storable(value)
    except ValueError as exc:
        raise Invalid(f"{where}: {exc}") from None


@router.get("")
def list_jobs(
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, description="capped at the server's page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    status: Status | None = None,
) -> JobsPage:
    """This key's jobs, newest first."""
    limit = min(limit, settings.page_max)
    jobs = store.list_jobs(tenant, limit + 1, offset, status)
    items = [JobView.model_validate(job) for job in jobs[:limit]]
    return JobsPage(items=items, next_offset=offset + limit if len(jobs) > limit else None)


@router.get("/{job_id}")
def get_job(job_id: str, tenant: TenantDep, store: StoreDep) -> JobView:
    """Status, progress, answers paid and cached, metrics once done."""
    return JobView.model_validate(store.get_job(tenant, job_id))


@router.post("/{job_id}/cancel", responses={409: {"model": ErrorBody}})
def cancel_job(job_id: str, tenant: TenantDep, store: StoreDep) -> JobView:
    """A queued job is cancelled at once; a running one stops at its worker's next heartbeat."""
    job = store.request_cancel(tenant, job_id)
    log.info("job cancel requested", extra={"job": job.id, "tenant": tenant, "status": job.status})
    return JobView.model_validate(job)
