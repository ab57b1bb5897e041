"""The `recmimic` command: one subcommand per pipeline stage, plus `demo`.

Commands stay thin: they parse options into the stage's own config dataclass and call one
function. Known errors become a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import fields
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from distill.cli import distill, evaluate
from extractor.cli import extract
from teacher_mock.cli import serve as teacher_serve

app = typer.Typer(
    help="Extract a black-box sequential recommender into a local student model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Obtain and inspect datasets.", no_args_is_help=True)
teacher_app = typer.Typer(help="Train and serve the black-box teacher.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the service.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(teacher_app, name="teacher")
app.add_typer(keys_app, name="keys")
teacher_app.command("serve")(teacher_serve)
app.command("extract")(extract)
app.command("distill")(distill)
app.command("evaluate")(evaluate)


def main() -> None:
    """Console entry point: turn expected failures into one line on stderr."""
    try:
        app()
    except Exception as exc:
        if not is_user_error(exc):
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def is_user_error(exc: Exception) -> bool:
    """Whether `exc` describes the user's input (USER_ERRORS). The stages' error classes are
    imported only here, after the fact, so that `--help` and option errors never load torch
    (`service.user_errors` imports none that does)."""
    from service.user_errors import USER_ERRORS

    return isinstance(exc, USER_ERRORS)


def overrides(cls: type, factory: Callable[..., Any] | None = None, **values: Any) -> Any:
    """Build a config dataclass from the options that were given; the dataclass owns defaults.

    `factory` (default: the class itself) builds it, e.g. a per-architecture default.
    """
    names = {f.name for f in fields(cls)}
    return (factory or cls)(**{k: v for k, v in values.items() if v is not None and k in names})


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


@data_app.command("fetch")
def data_fetch(name: Annotated[str, typer.Argument(help="Dataset name: ml-100k")]) -> None:
    """Download a public dataset into the cache and print where it is."""
    from seqrec.data.fetch import fetch_ml100k

    if name != "ml-100k":
        raise ValueError(f"unknown dataset {name!r}; fetchable: ml-100k")
    fetched = fetch_ml100k()
    typer.echo(f"path:   {fetched.path}\nsha256: {fetched.sha256}\norigin: {fetched.origin}")


@data_app.command("stats")
def data_stats(
    dataset: Annotated[str, typer.Argument(help="ml-100k, synthetic[:USERS:ITEMS] or a file")],
    fmt: Annotated[str | None, typer.Option(help="File format when not detectable")] = None,
    min_user: int = 5,
    min_item: int = 5,
) -> None:
    """Size, sparsity, history lengths and the head/tail cut of a dataset."""
    from seqrec.data.loading import load_dataset
    from seqrec.data.stats import dataset_stats

    stats = dataset_stats(load_dataset(dataset, fmt=fmt, min_user=min_user, min_item=min_item))
    width = max(map(len, stats))
    for key, value in stats.items():
        typer.echo(f"{key:<{width}}  {value}")


@teacher_app.command("train")
def teacher_train(
    dataset: Annotated[str, typer.Option(help="ml-100k, synthetic[:USERS:ITEMS] or a file")],
    out: Annotated[Path, typer.Option(help="Artifact directory to write")] = Path("runs/teacher"),
    arch: Annotated[str, typer.Option(help="sasrec or bert4rec")] = "sasrec",
    seed: int = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write test metrics here")
    ] = None,
    hidden: int | None = None,
    n_blocks: int | None = None,
    n_heads: int | None = None,
    max_len: int | None = None,
    dropout: float | None = None,
    mask_ratio: float | None = None,
    experts: Annotated[
        int | None, typer.Option(help="HPSERec long-tail experts (>= 2; sasrec only)")
    ] = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    batch_size: int | None = None,
    max_epochs: int | None = None,
    patience: int | None = None,
    device: str | None = None,
    min_user: int = 5,
    min_item: int = 5,
) -> None:
    """Train a SASRec or BERT4Rec teacher with early stopping; evaluate on the test split."""
    from seqrec.data.loading import load_dataset
    from seqrec.models.config import ModelConfig

    options = locals()
    model_config = overrides(ModelConfig, **options)  # checked before torch is imported
    data = load_dataset(dataset, min_user=min_user, min_item=min_item)
    from seqrec.supervised import train_supervised
    from seqrec.train import TrainConfig

    train_config = overrides(TrainConfig, partial(TrainConfig.for_arch, arch), **options)
    summary = train_supervised(data, model_config, train_config, out)
    overall = summary.test["overall"]
    typer.echo(
        f"{arch} on {data.name}: test NDCG@10 {overall['NDCG@10']:.4f}"
        f"  HR@10 {overall['HR@10']:.4f}"
        f"  (best epoch {summary.training['best_epoch']}, {summary.seconds:.0f}s) -> {out}"
    )
    if json_path:
        write_json(json_path, summary.to_dict())


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Argument(help="Tenant the key acts for (created on first use)")],
) -> None:
    """Print a new API key for TENANT: shown once, stored only as a hash.

    Only the key goes to stdout, so scripts can capture it: KEY=$(recmimic keys create me).
    """
    from service.db.engine import make_engine, migrate, session_factory
    from service.keys import create_key
    from service.settings import ServiceSettings

    engine = make_engine(ServiceSettings().database())
    migrate(engine)
    typer.echo(create_key(session_factory(engine), tenant))


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    worker: Annotated[
        bool, typer.Option(help="Also run one worker in this process (--no-worker: API only)")
    ] = True,
) -> None:
    """Serve the jobs and students API (settings from RECMIMIC_* variables or recmimic.env)."""
    from service.server import serve as serve_api
    from service.settings import ServiceSettings

    serve_api(ServiceSettings(), host, port, worker)


@app.command("worker")
def worker(
    once: Annotated[bool, typer.Option(help="Run at most one job, then exit")] = False,
    poll_s: Annotated[
        float | None, typer.Option(min=0.01, help="Seconds between looks at an empty queue")
    ] = None,
) -> None:
    """Claim extraction jobs from the database and run them (RECMIMIC_* settings, like serve)."""
    from service.settings import ServiceSettings
    from service.worker import run_worker

    settings = ServiceSettings()
    if poll_s is not None:
        settings = settings.model_copy(update={"poll_s": poll_s})
    run_worker(settings, once)


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the teacher, service and reports go")] = Path(
        "runs/demo"
    ),
    dataset: Annotated[str, typer.Option(help="Dataset name or file")] = "ml-100k",
    arch: Annotated[str, typer.Option(help="Teacher backbone: sasrec or bert4rec")] = "sasrec",
    seed: int = 0,
    retrain: Annotated[bool, typer.Option(help="Train the teacher even if one exists")] = False,
    max_epochs: Annotated[int | None, typer.Option(help="Cap teacher training epochs")] = None,
    port: Annotated[int | None, typer.Option(help="Local port of the demo's black box")] = None,
    source: Annotated[
        str | None, typer.Option(help="Job's queries: seeded, autoregressive or frequency")
    ] = None,
    budget: Annotated[int | None, typer.Option(help="Job's paid answers for probing")] = None,
    n_sequences: Annotated[int | None, typer.Option(help="Data-free sequences to grow")] = None,
    epochs: Annotated[int | None, typer.Option(help="Cap student training epochs")] = None,
    poll_s: Annotated[float | None, typer.Option(help="Seconds between job status reads")] = None,
) -> None:
    """Run the pipeline end to end on MovieLens-100k through the service and print the report."""
    from service.demo import DemoConfig, run_demo

    run_demo(overrides(DemoConfig, **locals()))


if __name__ == "__main__":
    main()
