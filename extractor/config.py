"""What one extraction run is told: the black box, the budget, the query source, where to write.

The API key is a secret: it is kept out of the repr and out of `to_dict` (which is what the run
records), so it never reaches a log, a summary or a probe set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from extractor.cache import redact_url
from extractor.profiles import ApiProfile, load_profile
from extractor.views import DEFAULT_SCALES

Source = Literal["autoregressive", "frequency", "seeded", "test-histories"]
SOURCES: tuple[str, ...] = ("autoregressive", "frequency", "seeded")  # what users choose from
# Each test user's history before its test item, one query each in user order: what an
# evaluation against the black box asks (`distill.fidelity`), paid like any probing.
TEST_HISTORIES = "test-histories"


@dataclass(frozen=True)
class ExtractConfig:
    """One run. `cache` is a redis:// URL or a file path; None: embedded under `out`.

    Data-free sources ("autoregressive", "frequency") use `n_sequences`, `min_length` and
    `max_length`; "seeded" uses `dataset` (a name or file for `load_dataset`, training split
    only), `prefixes` ("all" or that many prefixes per user), `whole_first` (each user's whole
    history before any shorter prefix). `max_history`, for any source, asks at most a query's
    most recent N items (None: all of them; the API profile may cap them too).
    """

    teacher_url: str
    api_key: str = field(repr=False)
    budget: int
    out: Path
    source: Source = "seeded"
    dataset: str | None = None
    n_sequences: int = 1000
    group_size: int = 32  # data-free sequences grown together (`AutoregressiveConfig`)
    min_length: int = 1
    max_length: int = 50
    prefixes: Literal["all"] | int = "all"
    whole_first: bool = False  # seeded: each user's whole history before shorter prefixes
    max_history: int | None = None
    scales: tuple[float, ...] = DEFAULT_SCALES
    k: int = 100
    cache: str | None = None
    concurrency: int = 8
    seed: int = 0
    timeout_s: float = 30.0  # one request's read timeout
    chunk_size: int = 1024  # queries planned, looked up and paid for together; rows per part
    batch_size: int = 256  # histories per batch request
    batch: bool | None = None  # None: use the batch endpoint when offered; False: never
    rate: float | None = None  # requests per second at most; None: the profile's, or found
    # A built-in profile's name, a TOML file or a profile itself (a service job's); None:
    # recmimic's own contract.
    api_profile: str | ApiProfile | None = None

    @cached_property
    def profile(self) -> ApiProfile | None:
        """The API profile the client speaks (`extractor.profiles`); None: recmimic's contract."""
        if self.api_profile is None or isinstance(self.api_profile, ApiProfile):
            return self.api_profile
        return load_profile(self.api_profile)

    @property
    def history_cap(self) -> int | None:
        """The most ids a query may have when asked: `max_history` and the profile's own
        limit (one in item mode); None: no limit."""
        caps = [self.max_history, self.profile.history_cap if self.profile else None]
        known = [cap for cap in caps if cap is not None]
        return min(known) if known else None

    def __post_init__(self) -> None:
        object.__setattr__(self, "teacher_url", self.teacher_url.rstrip("/"))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "scales", tuple(float(r) for r in self.scales))
        problem = self._problem()
        if problem:
            raise ValueError(problem)
        self.profile  # noqa: B018  (a profile that cannot be used fails here, naming its field)

    def _problem(self) -> str | None:
        """The first thing wrong with this config, as one line; None when it is usable."""
        if not self.teacher_url.startswith(("http://", "https://")):
            return f"teacher URL must start with http:// or https://, got {self.teacher_url!r}"
        if not self.api_key:
            return "no API key given"
        if self.source not in (*SOURCES, TEST_HISTORIES):
            return f"source must be one of {', '.join(SOURCES)}, got {self.source!r}"
        if self.source in ("seeded", TEST_HISTORIES) and not self.dataset:
            return f"the {self.source} source needs a dataset (a name or a file)"
        if self.budget < 0:
            return f"budget must be >= 0, got {self.budget}"
        if 1.0 not in self.scales:
            return f"scales must include 1 (the full view), got {list(self.scales)}"
        if len(set(self.scales)) != len(self.scales) or not all(0 < r <= 1 for r in self.scales):
            return f"scales must be distinct and in (0, 1], got {list(self.scales)}"
        if self.prefixes != "all" and (
            isinstance(self.prefixes, bool) or not isinstance(self.prefixes, int)
        ):
            return f"prefixes must be 'all' or a positive int, got {self.prefixes!r}"
        if self.prefixes != "all" and self.prefixes < 1:
            return f"prefixes must be at least 1, got {self.prefixes}"
        if self.max_history is not None and self.max_history < 1:
            return f"max_history must be at least 1, got {self.max_history}"
        if self.whole_first and self.source != "seeded":
            return "whole_first applies to the seeded source"
        if not 1 <= self.min_length <= self.max_length:
            return f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}"
        for name in ("k", "concurrency", "n_sequences", "group_size", "chunk_size", "batch_size"):
            if getattr(self, name) < 1:
                return f"{name} must be at least 1, got {getattr(self, name)}"
        if self.rate is not None and self.rate <= 0:
            return f"rate must be positive, got {self.rate}"
        if self.timeout_s <= 0:
            return f"timeout_s must be positive, got {self.timeout_s}"
        signs = self.profile.auth.kind if self.profile is not None else None
        if signs == "sigv4" and ":" not in self.api_key:
            return "the API profile signs with sigv4: give the key as ACCESS_KEY_ID:SECRET"
        return None

    def query_source(self) -> dict[str, Any]:
        """What fixes the queries and their ids; a resumed run must match it exactly."""
        cap = self.history_cap
        if self.source == TEST_HISTORIES:
            fixed = {"source": self.source, "dataset": self.dataset}
            if cap is not None:
                fixed["max_history"] = cap
            return fixed
        if self.source == "seeded":
            fixed = {
                "source": self.source,
                "dataset": self.dataset,
                "prefixes": self.prefixes,
                "seed": self.seed,
            }
            if cap is not None:  # absent when unset: older probe sets still resume
                fixed["max_history"] = cap
            if self.whole_first:  # the same
                fixed["whole_first"] = True
            return fixed
        fixed = {
            "source": self.source,
            "n_sequences": self.n_sequences,
            "group_size": self.group_size,
            "min_length": self.min_length,
            "max_length": self.max_length,
            "seed": self.seed,
        }
        if cap is not None:  # each sequence is asked by its most recent `cap` ids
            fixed["max_history"] = cap
        return fixed

    def to_dict(self) -> dict[str, Any]:
        """Every setting but the API key (and any cache password), JSON-ready."""
        data = asdict(self)
        del data["api_key"]
        if isinstance(self.api_profile, ApiProfile):
            data["api_profile"] = self.api_profile.model_dump(mode="json")
        data["cache"] = None if self.cache is None else redact_url(self.cache)
        data["out"] = str(self.out)
        data["scales"] = list(self.scales)
        return data


def parse_scales(text: str) -> tuple[float, ...]:
    """ "1,0.5,0.25" -> (1.0, 0.5, 0.25); a one-line ValueError for anything else."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"bad scales {text!r}: expected numbers like '1,0.5,0.25'") from None
    if not scales:
        raise ValueError(f"bad scales {text!r}: expected numbers like '1,0.5,0.25'")
    return scales
