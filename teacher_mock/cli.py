"""`recmimic teacher serve`: the command function; the lead's Typer app registers it.

Options given on the command line win; anything left out comes from `RECMIMIC_TEACHER_*`
environment variables (see `teacher_mock.settings`). Prefer `RECMIMIC_TEACHER_API_KEYS` or
`--api-keys-file` to `--api-key`: command lines are visible to other users of the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from seqrec.serving.ports import check_port_free


def _default(name: str, value: str) -> str:
    """A setting's default as `--help` shows it; $RECMIMIC_TEACHER_<NAME> overrides it.

    Stated here rather than read from `TeacherSettings`: importing pydantic-settings with the
    command line made the process abort at exit, now and then, after torch and pyarrow had
    loaded (`tests/test_cli.py` checks that these values are the settings' defaults)."""
    return f"{value} or $RECMIMIC_TEACHER_{name.upper()}"


def serve(
    ctx: typer.Context,
    model: Annotated[
        Path | None,
        typer.Option(help="Model artifact directory (default: $RECMIMIC_TEACHER_MODEL_DIR)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY",
            help="Accepted API key (repeatable; default: $RECMIMIC_TEACHER_API_KEYS).",
            show_default=False,
        ),
    ] = None,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            help="File with one API key per line (default: $RECMIMIC_TEACHER_API_KEYS_FILE)."
        ),
    ] = None,
    quota: Annotated[
        int | None,
        typer.Option(
            help="Answered histories per key.", show_default=_default("quota", "unlimited")
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Requests per second per key.", show_default=_default("rate", "unlimited")
        ),
    ] = None,
    burst: Annotated[
        int | None,
        typer.Option(
            help="Rate-limit burst per key.", show_default=_default("burst", "one second of --rate")
        ),
    ] = None,
    latency_ms: Annotated[
        float | None,
        typer.Option(help="Latency added per request.", show_default=_default("latency_ms", "0")),
    ] = None,
    error_rate: Annotated[
        float | None,
        typer.Option(
            help="Share of requests failing 503.", show_default=_default("error_rate", "0")
        ),
    ] = None,
    timeout_rate: Annotated[
        float | None,
        typer.Option(
            help="Share of requests that hang, then 504.",
            show_default=_default("timeout_rate", "0"),
        ),
    ] = None,
    truncate_rate: Annotated[
        float | None,
        typer.Option(
            help="Share of answers cut in half (invalid JSON).",
            show_default=_default("truncate_rate", "0"),
        ),
    ] = None,
    fault_seed: Annotated[
        int | None,
        typer.Option(
            help="Seed of the fault draws.", show_default=_default("fault_seed", "random")
        ),
    ] = None,
    wire: Annotated[
        str | None,
        typer.Option(
            help="The API it speaks: recmimic, mlflow, open-inference, or the shape of "
            "recombee, algolia or personalize (one worker for recombee and personalize; "
            "personalize takes keys ACCESS_KEY_ID:SECRET_ACCESS_KEY).",
            show_default=_default("wire", "recmimic"),
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, help="uvicorn worker processes (one for a session wire)."),
    ] = 1,
) -> None:
    """Serve a trained model as a black-box top-k recommendation API."""
    from seqrec.artifact_files import artifact_directory
    from seqrec.serving.contract import describe_errors
    from teacher_mock.sessions import check_workers
    from teacher_mock.settings import TeacherSettings

    given: dict[str, Any] = {
        "model_dir": model,
        "api_keys": api_key or None,
        "api_keys_file": api_keys_file,
        "quota": quota,
        "rate": rate,
        "burst": burst,
        "latency_ms": latency_ms,
        "error_rate": error_rate,
        "timeout_rate": timeout_rate,
        "truncate_rate": truncate_rate,
        "fault_seed": fault_seed,
        "wire": wire,
    }
    try:
        settings = TeacherSettings(**{name: v for name, v in given.items() if v is not None})
    except ValidationError as exc:
        raise typer.BadParameter(describe_errors(exc.errors())) from None
    try:
        check_workers(settings.wire, workers)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    check_port_free(host, port)  # before the model loads, not after
    try:
        artifact_directory(settings.model_dir)  # before torch loads: a bad path fails at once
        from seqrec.artifacts import load_artifact
        from teacher_mock.foreign_auth import verifier_for
        from teacher_mock.server import serve as serve_teacher

        verifier_for(settings)  # the wire's keys and botocore, before the model loads
        artifact = load_artifact(settings.model_dir, settings.device)
    except ValueError as exc:  # an ArtifactError, or keys the wire cannot use
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    verbose = bool(ctx.find_root().params.get("verbose"))  # the global --verbose
    serve_teacher(settings, host, port, workers, artifact=artifact, access_log=verbose)
