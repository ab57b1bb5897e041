"""Everything the black box can be told, in one place (environment prefix `RECMIMIC_TEACHER_`).

Every field reads from `RECMIMIC_TEACHER_<FIELD>`, e.g. `RECMIMIC_TEACHER_MODEL_DIR`,
`RECMIMIC_TEACHER_QUOTA`. API keys come from `RECMIMIC_TEACHER_API_KEYS` (comma-separated, or a
JSON list) and/or `RECMIMIC_TEACHER_API_KEYS_FILE` (one key per line, `#` comments); keys are
`SecretStr` so they never show up in a repr or a log line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "RECMIMIC_TEACHER_"
# The API spoken (teacher_mock.wires): recmimic's own, a model server's, or the shape of a
# commercial recommendation API (teacher_mock.wire_recombee, wire_algolia, wire_personalize).
Wire = Literal["recmimic", "mlflow", "open-inference", "recombee", "algolia", "personalize"]


class TeacherSettings(BaseSettings):
    """Configuration of one teacher process; per-key quota and rate state live in the process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    model_dir: Path
    device: str = "cpu"
    wire: Wire = Field(default="recmimic", description="the API it speaks (teacher_mock.wires)")

    # Access control.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    api_keys_file: Path | None = None
    quota: int | None = Field(default=None, ge=0, description="answered histories per key")
    rate: float | None = Field(default=None, gt=0, description="requests per second per key")
    burst: int | None = Field(default=None, ge=1, description="token bucket size per key")

    # Input limits.
    max_k: int = Field(default=100, ge=1, description="capped at the catalogue size")
    max_history: int = Field(default=1000, ge=1)
    max_batch: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    items_page_max: int = Field(default=1000, ge=1)
    scores: bool = Field(default=False, description="answers include scores (experiments only)")
    max_sessions: int = Field(
        default=100_000, ge=1, description="users a session wire keeps (least recent dropped)"
    )

    # Fault injection on /v1/recommend*: one draw per request, rates must sum to at most 1.
    latency_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    truncate_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_hang_s: float = Field(default=30.0, ge=0, description="how long a timeout hangs")
    fault_seed: int | None = None

    # Micro-batching of concurrent requests into one forward pass (`seqrec.serving.batcher`).
    # No wait by default: a busy teacher batches anyway (requests queue during a forward pass).
    # On the shared 2 cores, 2 ms against none under wrk (6 runs each, 1 process at 32
    # connections and 2 at 64): the same CPU per request (1.0-1.3 ms) and requests/s within the
    # runs' noise, but a lone client got 143-157 requests/s with the wait and 400-524 without.
    batch_wait_ms: float = Field(default=0.0, ge=0, description="wait for company per batch")
    batch_max_rows: int = Field(default=512, ge=1)
    torch_threads: int | None = Field(default=None, ge=1, description="None: cores left over")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept `a,b` or `["a", "b"]` from the environment, a list from code."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.split(",")
        return value

    @model_validator(mode="after")
    def _check(self) -> TeacherSettings:
        if self.api_keys_file is not None:
            self.api_keys = self.api_keys + read_keys_file(self.api_keys_file)
        self.api_keys = [key for key in self.api_keys if key.get_secret_value().strip()]
        if not self.api_keys:
            raise ValueError(
                f"no API key: set {ENV_PREFIX}API_KEYS or {ENV_PREFIX}API_KEYS_FILE (or --api-key)"
            )
        if self.error_rate + self.timeout_rate + self.truncate_rate > 1:
            raise ValueError("error_rate + timeout_rate + truncate_rate must be at most 1")
        if self.burst is not None and self.rate is None:
            raise ValueError("burst needs a rate")
        return self

    def key_values(self) -> list[str]:
        """The plain keys, for the auth check only."""
        return [key.get_secret_value().strip() for key in self.api_keys]

    def bucket_size(self) -> int:
        """Burst defaults to one second's worth of requests (at least one)."""
        if self.burst is not None:
            return self.burst
        return max(1, round(self.rate or 1))


def read_keys_file(path: Path) -> list[SecretStr]:
    """One key per line; blank lines and `#` comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read API keys file {path}: {exc.strerror}") from exc
    return [SecretStr(line.strip()) for line in lines if line.strip() and not line.startswith("#")]


def settings_env(settings: TeacherSettings) -> dict[str, str | None]:
    """The environment that rebuilds `settings` in another process (None: unset the variable).

    Worker processes started by uvicorn rebuild their app from the environment; the keys file is
    already folded into `api_keys`, so it is unset to avoid reading it twice.
    """
    env: dict[str, str | None] = {}
    for name, value in settings.model_dump(mode="json").items():
        env[ENV_PREFIX + name.upper()] = None if value is None else str(value)
    env[ENV_PREFIX + "API_KEYS"] = json.dumps(settings.key_values())
    env[ENV_PREFIX + "API_KEYS_FILE"] = None
    return env
