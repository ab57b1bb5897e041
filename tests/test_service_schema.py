"""Property-based run of the service against its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid and invalid, with a real key; each response must
not be a 5xx and must match the documented status codes, content type and body schema. A known
student and job are seeded, and a third of the cases use their ids so the routes behind the
404 are reached too. (schemathesis's own pytest plugin does not run under pytest 9, so each
operation is a plain Hypothesis test over schemathesis's strategies.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tiny_teacher import save_tiny_teacher

from service.api.app import create_app
from service.keys import create_key
from service.settings import ServiceSettings
from service.store import JobStore

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 50
ITEM_IDS = [str(100 + i) for i in range(30)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> tuple[FastAPI, str, dict[str, str]]:
    """The app, a key, and the ids of a real job and student of that key's tenant."""
    home: Path = tmp_path_factory.mktemp("schema")
    app = create_app(ServiceSettings(home=home, max_history=40, max_batch=8))
    store: JobStore = app.state.store
    report = home / "report.json"
    report.write_text(json.dumps({"dataset": "tiny"}))
    job, _ = store.create_job("fuzz", {"teacher_url": "http://t"}, "k")
    store.claim_job("w", 60)
    student = store.finish_done(
        job.id,
        "w",
        metrics={},
        artifact_path=str(save_tiny_teacher(home / "student", ITEM_IDS)),
        report_path=str(report),
    )
    return app, create_key(store.sessions, "fuzz"), {"job_id": job.id, "student_id": student.id}


@pytest.fixture(scope="module")
def api_schema(service: tuple[FastAPI, str, dict[str, str]]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", service[0])


OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "POST /v1/jobs",
    "GET /v1/jobs",
    "GET /v1/jobs/{job_id}",
    "POST /v1/jobs/{job_id}/cancel",
    "GET /v1/students",
    "GET /v1/students/{student_id}",
    "GET /v1/students/{student_id}/report",
    "POST /v1/students/{student_id}/recommend",
    "POST /v1/students/{student_id}/recommend/batch",
]
cases_run: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def report_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Say how many generated requests ran, since Hypothesis stops early on small domains."""
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and cases_run:
        total = sum(cases_run.values())
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"schema fuzzing: {total} cases over {len(cases_run)} operations")


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    assert sorted(op.ok().label for op in api_schema.get_all_operations()) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_api_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, service: tuple[FastAPI, str, dict[str, str]], label: str
) -> None:
    _, key, known = service
    (operation,) = [op.ok() for op in api_schema.get_all_operations() if op.ok().label == label]
    names = {p.name for p in operation.path_parameters}
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        operation.as_strategy(
            GenerationMode.POSITIVE,
            path_parameters={k: v for k, v in known.items() if k in names},
        ),
    )

    cases_run[label] = cases_run.get(label, 0) + assert_conforms(strategy, key)


def assert_conforms(strategy: st.SearchStrategy[Case], key: str) -> int:
    """Send up to `EXAMPLES_PER_OPERATION` generated cases with `key`, each checked with
    `CHECKS`; how many were sent."""
    sent = 0

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def conforms(case: Case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)

    conforms()
    return sent
