"""Property-based run of the teacher (the black box) against its own OpenAPI schema.

The same checks as the service's (test_service_schema.py), over a real server on a real port:
every operation gets generated requests, valid and invalid, with a real key; no response may be
a 5xx, and each must match the documented status codes, content type and body schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from test_service_schema import ITEM_IDS, assert_conforms
from tiny_teacher import save_tiny_teacher

from teacher_mock.app import create_app
from teacher_mock.server import running
from teacher_mock.settings import TeacherSettings

KEY = "teacher-schema-key"
OPERATIONS = [
    "GET /healthz",
    "POST /v1/recommend",
    "POST /v1/recommend/batch",
    "GET /v1/items",
    "GET /v1/usage",
]


@pytest.fixture(scope="module")
def teacher_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    model: Path = save_tiny_teacher(tmp_path_factory.mktemp("teacher"), ITEM_IDS)
    settings = TeacherSettings(model_dir=model, api_keys=[KEY], max_history=40, max_batch=8)
    with running(create_app(settings)) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_every_teacher_operation_is_fuzzed(teacher_schema: schemathesis.BaseSchema) -> None:
    labels = sorted(op.ok().label for op in teacher_schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_the_teacher_conforms_to_its_schema(
    teacher_schema: schemathesis.BaseSchema, label: str
) -> None:
    (operation,) = [op.ok() for op in teacher_schema.get_all_operations() if op.ok().label == label]
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    assert assert_conforms(strategy, KEY) > 0
