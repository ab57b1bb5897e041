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

from adaptive.cli import steal
from distill.cli import distill, evaluate
from extractor.cli import extract
from seqrec.data.readers import FORMATS
from seqrec.models.config import ARCHS, ModelConfig
from seqrec.options import default_of
from seqrec.serving.ports import check_port_free
from seqrec.train_config import ARCH_DEFAULTS, TrainConfig
from service.demo_config import DemoConfig
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
app.command("steal")(steal)
app.command("evaluate")(evaluate)

FMT_HELP = f"File format when not detectable from the name or first line: {' | '.join(FORMATS)}"
DATASET_HELP = "ml-100k, synthetic[:USERS:ITEMS] or a file"
ARCH_HELP = " | ".join(ARCHS)
DEVICE_HELP = "auto (cuda when available), cpu or cuda"


@app.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Also show libraries' logs: alembic migrations, uvicorn access"
        ),
    ] = False,
) -> None:
    """Extract a black-box sequential recommender into a local student model."""


def is_verbose(ctx: typer.Context) -> bool:
    """The global `--verbose` (given before the subcommand)."""
    return bool(ctx.find_root().params.get("verbose"))


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


def model_default(name: str) -> str:
    return default_of(ModelConfig, name)


def train_default(name: str) -> str:
    """The trainer's default, and where a backbone's own differs (`ARCH_DEFAULTS`)."""
    own = [f"{arch}: {given[name]}" for arch, given in ARCH_DEFAULTS.items() if name in given]
    default = default_of(TrainConfig, name)
    return f"{default} ({', '.join(own)})" if own else default


def demo_default(name: str) -> str:
    return default_of(DemoConfig, name)


def announce_home(home: Path) -> None:
    """Create the service's data directory now, saying so on stderr: a `./recmimic-data`
    appearing unannounced wherever a command ran is a surprise (RECMIMIC_HOME moves it)."""
    if home.exists():
        return
    home.mkdir(parents=True)
    typer.echo(
        f"created the data directory {home.resolve()} (RECMIMIC_HOME sets another)", err=True
    )


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
    dataset: Annotated[str, typer.Argument(help=DATASET_HELP)],
    fmt: Annotated[str | None, typer.Option(help=FMT_HELP, show_default="detected")] = None,
    min_user: Annotated[int, typer.Option(help="k-core: fewest interactions per user")] = 5,
    min_item: Annotated[int, typer.Option(help="k-core: fewest interactions per item")] = 5,
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
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)],
    out: Annotated[Path, typer.Option(help="Artifact directory to write")] = Path("runs/teacher"),
    arch: Annotated[str, typer.Option(help=ARCH_HELP)] = "sasrec",
    fmt: Annotated[str | None, typer.Option(help=FMT_HELP, show_default="detected")] = None,
    seed: int = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write test metrics here (default: none)")
    ] = None,
    hidden: Annotated[int | None, typer.Option(show_default=model_default("hidden"))] = None,
    n_blocks: Annotated[int | None, typer.Option(show_default=model_default("n_blocks"))] = None,
    n_heads: Annotated[int | None, typer.Option(show_default=model_default("n_heads"))] = None,
    max_len: Annotated[
        int | None,
        typer.Option(help="Most recent items seen", show_default=model_default("max_len")),
    ] = None,
    dropout: Annotated[float | None, typer.Option(show_default=model_default("dropout"))] = None,
    mask_ratio: Annotated[
        float | None,
        typer.Option(
            help="bert4rec: share of items masked", show_default=model_default("mask_ratio")
        ),
    ] = None,
    experts: Annotated[
        int | None,
        typer.Option(
            help="HPSERec long-tail experts (0 = off, else >= 2; sasrec only)",
            show_default=model_default("experts"),
        ),
    ] = None,
    lr: Annotated[float | None, typer.Option(show_default=train_default("lr"))] = None,
    weight_decay: Annotated[
        float | None, typer.Option(show_default=train_default("weight_decay"))
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(show_default=train_default("batch_size"))
    ] = None,
    max_epochs: Annotated[
        int | None, typer.Option(help="Cap on epochs", show_default=train_default("max_epochs"))
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Epochs without a better validation NDCG@10 before stopping",
            show_default=train_default("patience"),
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help=DEVICE_HELP, show_default=train_default("device"))
    ] = None,
    min_user: Annotated[int, typer.Option(help="k-core: fewest interactions per user")] = 5,
    min_item: Annotated[int, typer.Option(help="k-core: fewest interactions per item")] = 5,
) -> None:
    """Train a SASRec or BERT4Rec teacher with early stopping; evaluate on the test split."""
    from seqrec.data.loading import load_dataset

    options = locals()
    model_config = overrides(ModelConfig, **options)  # checked before torch is imported
    data = load_dataset(dataset, fmt=fmt, min_user=min_user, min_item=min_item)
    from seqrec.supervised import train_supervised

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

    settings = ServiceSettings()
    if settings.database_url is None:  # the default SQLite file lives in the data directory
        announce_home(settings.home)
    engine = make_engine(settings.database())
    migrate(engine)
    typer.echo(create_key(session_factory(engine), tenant))


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8080,
    worker: Annotated[
        bool, typer.Option(help="Also run one worker in this process (--no-worker: API only)")
    ] = True,
) -> None:
    """Serve the jobs and students API (settings from RECMIMIC_* variables or recmimic.env)."""
    check_port_free(host, port)
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    announce_home(settings.home)
    from service.server import serve as serve_api

    serve_api(settings, host, port, worker, verbose=is_verbose(ctx))


@app.command("worker")
def worker(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(help="Run at most one job, then exit")] = False,
    poll_s: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Seconds between looks at an empty queue (default: RECMIMIC_POLL_S, else 2.0)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Claim extraction jobs from the database and run them (RECMIMIC_* settings, like serve)."""
    from service.settings import ServiceSettings

    settings = ServiceSettings()
    announce_home(settings.home)
    if poll_s is not None:
        settings = settings.model_copy(update={"poll_s": poll_s})
    from service.worker import run_worker

    run_worker(settings, once, verbose=is_verbose(ctx))


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the teacher, service and reports go")] = Path(
        "runs/demo"
    ),
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)] = "ml-100k",
    arch: Annotated[str, typer.Option(help=f"Teacher backbone: {ARCH_HELP}")] = "sasrec",
    seed: int = 0,
    retrain: Annotated[bool, typer.Option(help="Train the teacher even if one exists")] = False,
    max_epochs: Annotated[
        int | None,
        typer.Option(help="Cap teacher training epochs", show_default=train_default("max_epochs")),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Local port of the demo's black box", show_default=demo_default("port")),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Job's queries: seeded | autoregressive | frequency",
            show_default=demo_default("source"),
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Job's paid answers for probing (evaluation has its own: one per test user)",
            show_default=demo_default("budget"),
        ),
    ] = None,
    n_sequences: Annotated[
        int | None,
        typer.Option(help="Data-free sequences to grow", show_default=demo_default("n_sequences")),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Cap student training epochs", show_default=demo_default("epochs")),
    ] = None,
    poll_s: Annotated[
        float | None,
        typer.Option(help="Seconds between job status reads", show_default=demo_default("poll_s")),
    ] = None,
) -> None:
    """Run the pipeline end to end on MovieLens-100k through the service and print the report."""
    config = overrides(DemoConfig, **locals())
    check_port_free("127.0.0.1", config.port)  # before minutes of teacher training, not after
    from service.demo import run_demo

    run_demo(config)


if __name__ == "__main__":
    main()
