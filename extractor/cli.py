"""`recmimic extract`: a black-box endpoint and a budget in, a probe set on disk out.

Thin: options become an `ExtractConfig`, `extractor.run.extract` does the work. Known failures
(bad options, unreachable teacher, refused key, a locked or unusable out directory) become one
line on stderr and exit code 2; so does a run the black box stopped part way (401, 403), after
its summary and with what was paid kept on disk. The API key is read from the option or the
environment and is never printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from extractor.config import SOURCES, ExtractConfig, parse_scales
from extractor.errors import BlackBoxError
from extractor.tasks import run_event_loop
from extractor.views import DEFAULT_SCALES

if TYPE_CHECKING:
    from extractor.run import ExtractSummary

KEY_VARIABLES = ("RECMIMIC_API_KEY", "RECMIMIC_TEACHER_API_KEY")


def extract(
    teacher_url: Annotated[str, typer.Option(help="Base URL of the black box")],
    budget: Annotated[int, typer.Option(help="Most answered histories to pay for, all runs")],
    out: Annotated[Path, typer.Option(help="Run directory: probe set, cache, budget ledger")],
    api_key: Annotated[
        str | None,
        typer.Option(help=f"API key (default: ${KEY_VARIABLES[0]} or ${KEY_VARIABLES[1]})"),
    ] = None,
    source: Annotated[str, typer.Option(help=" | ".join(SOURCES))] = "seeded",
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Seeded: ml-100k, synthetic[:USERS:ITEMS] or a file (default: none; seeded "
            "needs one)"
        ),
    ] = None,
    n_sequences: Annotated[int, typer.Option(help="Data-free: sequences to grow")] = 1000,
    min_length: Annotated[int, typer.Option(help="Data-free: shortest sequence")] = 1,
    max_length: Annotated[int, typer.Option(help="Data-free: longest sequence")] = 50,
    prefixes: Annotated[str, typer.Option(help="Seeded: 'all' or prefixes per user")] = "all",
    whole_first: Annotated[
        bool,
        typer.Option(
            "--whole-first",
            help="Seeded: ask each user's whole history before any shorter prefix",
        ),
    ] = False,
    max_history: Annotated[
        int | None,
        typer.Option(help="Seeded: ask at most a query's most recent N items (default: all)"),
    ] = None,
    scales: Annotated[
        str, typer.Option(help="View scales, must include 1; e.g. 1,0.5,0.25 for views")
    ] = ",".join(f"{r:g}" for r in DEFAULT_SCALES),
    k: Annotated[int, typer.Option(help="Items per answer")] = 100,
    cache: Annotated[
        str | None, typer.Option(help="redis:// URL or file (default: embedded under --out)")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight")] = 8,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Requests per second at most (default: the API profile's limit, else found "
            "from the black box's 429s)"
        ),
    ] = None,
    seed: int = 0,
    timeout: Annotated[float, typer.Option(help="Seconds one request may take")] = 30.0,
    batch_size: Annotated[int, typer.Option(help="Histories per batch request")] = 256,
    chunk_size: Annotated[int, typer.Option(help="Queries handled (and written) together")] = 1024,
    api_profile: Annotated[
        str | None,
        typer.Option(
            help="How to talk to the black box: mlflow, open-inference or a TOML profile file "
            "(default: recmimic's own contract)"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Query the black box for a probe set, within the budget; resumes an interrupted run."""
    if budget < 1:  # before anything is written: a budget of 0 leaves a probe set of nothing
        raise ValueError(f"--budget must be at least 1 paid answer, got {budget}")
    from extractor.client import BUDGET_REFUSED
    from extractor.run import extract as run_extract

    config = ExtractConfig(
        teacher_url=teacher_url,
        api_key=api_key_from(api_key),
        budget=budget,
        out=out,
        source=source,  # type: ignore[arg-type]  # checked by ExtractConfig
        dataset=dataset,
        n_sequences=n_sequences,
        min_length=min_length,
        max_length=max_length,
        prefixes=all_or_count(prefixes, "--prefixes"),
        whole_first=whole_first,
        max_history=max_history,
        scales=parse_scales(scales),
        k=k,
        cache=cache,
        concurrency=concurrency,
        rate=rate,
        seed=seed,
        timeout_s=timeout,
        batch_size=batch_size,
        chunk_size=chunk_size,
        api_profile=api_profile,
    )
    try:
        summary = run_event_loop(run_extract(config, progress=progress))
    except BlackBoxError as exc:
        raise ValueError(_black_box_message(teacher_url, exc)) from None
    for name, value in summary.to_dict().items():
        typer.echo(f"{name:<16} {value}")
    if summary.stopped not in (None, BUDGET_REFUSED, "interrupted"):  # 401, 403: refused
        raise BlackBoxError(_stopped_message(teacher_url, out, summary), _status(summary.stopped))


def api_key_from(given: str | None) -> str:
    """The option's key, else the first of `KEY_VARIABLES` set; never echoed."""
    for value in (given, *(os.environ.get(name) for name in KEY_VARIABLES)):
        if value and value.strip():
            return value.strip()
    raise ValueError(f"no API key: pass --api-key or set {KEY_VARIABLES[0]}")


def all_or_count(text: str, option: str) -> Literal["all"] | int:
    """An option that is either 'all' or a positive count; anything else is a one-line error."""
    if text == "all":
        return "all"
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"bad {option} {text!r}: expected 'all' or a positive integer")
    return int(text)


def _black_box_message(url: str, exc: BlackBoxError) -> str:
    if exc.status == 401:
        return f"the teacher at {url} refused the API key ({exc})"
    if exc.status is None:
        return f"cannot reach the teacher at {url}: {exc}"
    return f"the teacher at {url} refused the run: {exc}"


def _stopped_message(url: str, out: Path, summary: ExtractSummary) -> str:
    """One line for a run the black box refused part way; the paid answers stay on disk."""
    status = _status(summary.stopped)
    if status == 403:
        what = "refused the quota (403)"
    elif status == 401:
        what = "refused the API key (401)"
    else:
        what = f"stopped the run ({summary.stopped})"
    return (
        f"the teacher at {url} {what} after {summary.paid} paid answers; the probe set in {out} "
        f"keeps them ({summary.queries_written} queries written, a rerun resumes)"
    )


def _status(stopped: str | None) -> int | None:
    """The HTTP status of a client stop reason (`extractor.client._describe`), if it has one."""
    head = (stopped or "").split(":", 1)[0]
    return int(head) if head.isdigit() else None
