"""Request and response bodies of the jobs and students routes.

The teacher API key is write-only: `JobRequest` takes it as a `SecretStr` (so it never shows in
a repr or a validation error), and no response model has a field for it.

Every string of a job request must be one the database stores (`storable`): PostgreSQL refuses
NUL in text, and a lone surrogate is no UTF-8 for either database. Refused here, it is a 422
naming the field instead of a 500 from the insert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from adaptive.config import AdaptiveConfig, GrowFrom, Score
from distill.config import Objective
from extractor.profiles import BUILT_IN, ApiProfile, load_profile
from extractor.views import DEFAULT_SCALES

Status = Literal["queued", "probing", "training", "evaluating", "done", "failed", "cancelled"]
DATASET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
MAX_KEY_LENGTH = 4096


def storable(value: str) -> str:
    """`value`, or ValueError when a database cannot store it as text (see the module)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (an unpaired surrogate is not)") from None
    return value


class AdaptiveOptions(BaseModel):
    """An adaptive job's rounds (`adaptive.config.AdaptiveConfig`, whose defaults these are)."""

    model_config = ConfigDict(extra="forbid")

    first_share: float = Field(
        default=AdaptiveConfig.first_share,
        gt=0,
        le=1,
        description="share of the budget paid before the first student",
    )
    rounds: int = Field(default=AdaptiveConfig.rounds, ge=1, le=20)
    score: Score = Field(
        default=AdaptiveConfig.score, description="what makes a query worth paying for"
    )
    grow_from: GrowFrom = Field(
        default=AdaptiveConfig.grow_from,
        description="data-free candidates: grown from the student's answers, or a paid query "
        "and one item of the teacher's paid answer",
    )


class JobRequest(BaseModel):
    """One extraction: which black box, how many paid answers, how to query, what to train.

    `dataset` is a dataset name (`ml-100k`, `synthetic:USERS:ITEMS`) or the name of a file the
    operator placed in the service's `datasets` folder, never a path: callers cannot make the
    worker read arbitrary files.
    """

    model_config = ConfigDict(extra="forbid")

    teacher_url: str = Field(max_length=2048, description="base URL of the black box (http/https)")
    teacher_api_key: SecretStr = Field(description="write-only; forgotten when the job ends")
    # Strict: 1e3 or true is not a count of answers (lax mode took 1e3 as 1000).
    budget: int = Field(
        ge=1,
        strict=True,
        description="paid answers for probing at most (capped by the service); evaluation "
        "has a budget of its own (evaluation_budget)",
    )
    evaluation_budget: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="paid answers for evaluating against the dataset's test users, apart from "
        "probing's budget; null = one per test user (answers lost on the way are billed, so "
        "a job killed while evaluating may need more)",
    )
    source: Literal["autoregressive", "frequency", "seeded"] = "autoregressive"
    strategy: Literal["oneshot", "adaptive"] = Field(
        default="oneshot",
        description="oneshot: every query decided before any is paid; adaptive: rounds, each "
        "paying for the queries the student trained so far is least sure of",
    )
    adaptive: AdaptiveOptions | None = Field(
        default=None, description="the adaptive strategy's rounds; null: their defaults"
    )
    dataset: str | None = Field(default=None, max_length=200, pattern=DATASET_PATTERN)
    scales: list[float] = Field(default=list(DEFAULT_SCALES), min_length=1, max_length=8)
    k: int = Field(default=100, ge=1, description="answer length asked of the black box")
    backbone: Literal["sasrec", "bert4rec"] = "sasrec"
    objective: Objective = "bahsd"
    experts: int = Field(default=0, ge=0, le=16, description="HPSERec tail experts; 0 = off")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    n_sequences: int = Field(default=1000, ge=1, le=1_000_000)
    prefixes: int | None = Field(
        default=None, ge=1, le=10_000, description="seeded: prefixes per user; null = all"
    )
    max_history: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="seeded: ask at most a query's most recent N items; null = all of them",
    )
    epochs: int | None = Field(default=None, ge=1, le=1000, description="cap on training epochs")
    profile: str | ApiProfile | None = Field(
        default=None,
        description="how to talk to the black box: a built-in API profile's name (mlflow, "
        "open-inference) or a profile object (the TOML file's fields); null = recmimic's own "
        "contract. The key goes in teacher_api_key, never in the profile's headers",
    )

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str):
            storable(text)
        return value

    @field_validator("profile")
    @classmethod
    def _built_in(cls, value: str | ApiProfile | None) -> str | ApiProfile | None:
        if isinstance(value, str) and value not in BUILT_IN:
            raise ValueError(f"no built-in API profile {value!r}; known: {', '.join(BUILT_IN)}")
        return value

    @field_validator("teacher_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("teacher_api_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        if not 1 <= len(value.get_secret_value()) <= MAX_KEY_LENGTH:
            raise ValueError(f"must be 1 to {MAX_KEY_LENGTH} characters")
        return value

    @field_validator("experts")
    @classmethod
    def _experts(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2: one expert is the plain backbone")
        return value

    @field_validator("scales")
    @classmethod
    def _scales(cls, value: list[float]) -> list[float]:
        if 1.0 not in value:
            raise ValueError("must include 1 (the full view)")
        if len(set(value)) != len(value) or not all(0 < r <= 1 for r in value):
            raise ValueError("must be distinct and in (0, 1]")
        return value

    @model_validator(mode="after")
    def _seeded_settings(self) -> JobRequest:
        if self.source == "seeded" and not self.dataset:
            raise ValueError("the seeded source needs a dataset")
        if self.source != "seeded" and self.max_history is not None:
            raise ValueError("max_history applies to the seeded source")
        profile = load_profile(self.profile) if isinstance(self.profile, str) else self.profile
        if profile is not None and profile.catalogue.file is not None:
            raise ValueError(
                "profile.catalogue.file: a job cannot read the server's files; list the "
                "catalogue at a path of the black box, or use the seeded source"
            )
        signed = profile.auth.kind if profile is not None else None
        if signed == "sigv4" and ":" not in self.teacher_api_key.get_secret_value():
            raise ValueError("the profile signs with sigv4: the key is ACCESS_KEY_ID:SECRET")
        if self.source != "seeded" and profile is not None and profile.catalogue.path is None:
            raise ValueError(
                f"the {self.source} source needs the black box's catalogue, and the API profile "
                "lists none: use the seeded source"
            )
        if self.adaptive is not None and self.strategy != "adaptive":
            raise ValueError("adaptive settings need strategy 'adaptive'")
        if self.adaptive is not None:
            problem = AdaptiveConfig(**self.adaptive.model_dump()).problem_with(self.source)
            if problem is not None:
                raise ValueError(problem)
        if self.evaluation_budget is not None and not self.dataset:
            raise ValueError("evaluation_budget needs a dataset (nothing is evaluated without)")
        return self

    def stored(self) -> dict[str, Any]:
        """What the job row keeps: everything but the teacher API key."""
        return self.model_dump(mode="json", exclude={"teacher_api_key"})


class JobView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    status: Status
    progress: float
    paid: int = Field(
        description="answers paid for so far: probing's, then evaluation's added when the job "
        "is done (`metrics` has them apart: probing.spent_total, evaluation.paid)"
    )
    cached: int = Field(description="answers served by the cache, free")
    cancel_requested: bool
    attempts: int = Field(description="how many times a worker claimed the job")
    error: str | None
    metrics: dict[str, Any] | None
    rounds: list[dict[str, Any]] | None = Field(
        description="adaptive jobs: each round's end (`ends_at`), paid total and the held-out "
        "agreement of the student trained after it, as they finish; null for one-shot jobs"
    )
    student_id: str | None
    request: dict[str, Any] = Field(description="the job's request, without the teacher API key")
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobsPage(BaseModel):
    items: list[JobView]
    next_offset: int | None


class StudentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    metrics: dict[str, Any] | None
    created_at: datetime


class StudentsPage(BaseModel):
    items: list[StudentView]
    next_offset: int | None


class ErrorBody(BaseModel):
    """Every refusal: 400 (a body that is not even text), 401, 404, 409, 410, 413, 422."""

    detail: str
