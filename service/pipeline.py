"""A job's request as the stages' own configs, and where each stage keeps its files.

Everything a job writes lives under `{home}/jobs/{job_id}/`: `probes/` (the probe set, the
budget ledger and, without Redis, the embedded answer cache), `student/` (the artifact and its
training checkpoint) and `report/`. Each stage resumes from what its folder holds, so a job
claimed again after its worker died never pays for an answer twice and loses at most an epoch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptive.config import AdaptiveConfig
from adaptive.run import StealConfig
from distill.config import DistillConfig, ObjectiveConfig
from distill.fidelity import EvaluateConfig
from extractor.config import ExtractConfig
from extractor.profiles import ApiProfile
from seqrec.models import ModelConfig
from service.settings import ServiceSettings

BUILT_IN_DATASET = re.compile(r"^(ml-100k|synthetic(:[0-9]+:[0-9]+)?)$")
DATASETS_DIR = "datasets"
DEFAULT_EPOCHS = 100  # the distiller's own default; a job's `epochs` caps it


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def probes(self) -> Path:
        return self.root / "probes"

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def report(self) -> Path:
        return self.root / "report"


def job_paths(settings: ServiceSettings, job_id: str) -> JobPaths:
    return JobPaths(settings.home / "jobs" / job_id)


def resolve_dataset(name: str, settings: ServiceSettings) -> str:
    """A built-in dataset name as is, or a file of the operator's `{home}/datasets/` folder.

    Callers name datasets, never paths: anything else is refused, so a job cannot make the
    worker read an arbitrary file.
    """
    if BUILT_IN_DATASET.match(name):
        return name
    folder = (settings.home / DATASETS_DIR).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise ValueError(
            f"unknown dataset {name!r}: not ml-100k or synthetic:USERS:ITEMS, and no such file "
            f"in the service's {DATASETS_DIR} folder"
        )
    return str(path)


def job_profile(request: dict[str, Any]) -> str | ApiProfile | None:
    """The job's API profile: a built-in's name, or the profile it carries (stored as JSON)."""
    profile = request.get("profile")  # absent from jobs made before the field
    return ApiProfile.model_validate(profile) if isinstance(profile, dict) else profile


def extract_config(
    request: dict[str, Any], teacher_key: str, settings: ServiceSettings, paths: JobPaths
) -> ExtractConfig:
    """Probing: the job's black box, budget and query source; Redis when the service has it."""
    dataset = request.get("dataset")
    return ExtractConfig(
        teacher_url=request["teacher_url"],
        api_key=teacher_key,
        budget=request["budget"],
        out=paths.probes,
        source=request["source"],
        dataset=resolve_dataset(dataset, settings) if dataset else None,
        n_sequences=request["n_sequences"],
        prefixes=request.get("prefixes") or "all",
        max_history=request.get("max_history"),  # absent from jobs made before the field
        scales=tuple(request["scales"]),
        k=request["k"],
        cache=settings.redis_url,  # None: embedded under the probe folder
        seed=request["seed"],
        api_profile=job_profile(request),
    )


def distill_config(
    request: dict[str, Any], settings: ServiceSettings, paths: JobPaths
) -> DistillConfig:
    """Training: the job's backbone, objective and experts, capped at its `epochs`."""
    return DistillConfig(
        probes=paths.probes,
        out=paths.student,
        model=ModelConfig(arch=request["backbone"], experts=request["experts"]),
        objective=ObjectiveConfig(name=request["objective"]),
        max_epochs=request.get("epochs") or DEFAULT_EPOCHS,
        seed=request["seed"],
        device=settings.worker_device,
        progress=False,
    )


def steal_config(
    request: dict[str, Any], teacher_key: str, settings: ServiceSettings, paths: JobPaths
) -> StealConfig:
    """An adaptive job: the job's probing and training, in rounds, in the job's folder."""
    return StealConfig(
        out=paths.root,
        extract=extract_config(request, teacher_key, settings, paths),
        distill=distill_config(request, settings, paths),
        adaptive=AdaptiveConfig(**(request.get("adaptive") or {})),
    )


def evaluate_config(
    request: dict[str, Any], teacher_key: str, settings: ServiceSettings, paths: JobPaths
) -> EvaluateConfig:
    """Evaluation against the black box itself (by URL), so it works for any teacher."""
    return EvaluateConfig(
        teacher=request["teacher_url"],
        student=paths.student,
        dataset=resolve_dataset(request["dataset"], settings),
        out=paths.report,
        api_key=teacher_key,
        budget=request.get("evaluation_budget"),  # absent from jobs made before the field
        api_profile=job_profile(request),
        cache=settings.redis_url,  # None: embedded under the report's teacher answers
    )
