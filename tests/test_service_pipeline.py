"""A job's stored request becomes the stages' configs (service.pipeline)."""

from __future__ import annotations

from pathlib import Path

from service.api.schemas import JobRequest
from service.pipeline import extract_config, job_paths
from service.settings import ServiceSettings


def test_a_jobs_max_history_reaches_the_extractor_and_older_jobs_have_none(
    tmp_path: Path,
) -> None:
    settings = ServiceSettings(home=tmp_path)
    paths = job_paths(settings, "job-1")
    request = JobRequest(
        teacher_url="http://teacher:8000",
        teacher_api_key="k",
        budget=10,
        source="seeded",
        dataset="ml-100k",
        max_history=50,
    ).stored()
    assert extract_config(request, "k", settings, paths).max_history == 50
    older = {name: value for name, value in request.items() if name != "max_history"}
    assert extract_config(older, "k", settings, paths).max_history is None
