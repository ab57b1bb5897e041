"""`recmimic steal`: a black box and a budget in, a student out, paid for in adaptive rounds.

Thin: options become a `StealConfig`; `adaptive.run.steal` does the work. It takes the
extraction's and the distillation's main options (the rest keep their defaults) and the
rounds' own. Known failures become one line and exit code 2 (`service.cli.main`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from adaptive.config import AdaptiveConfig, Score
from distill.config import DistillConfig, Objective, ObjectiveConfig
from extractor.cli import KEY_VARIABLES, api_key_from
from extractor.config import SOURCES, ExtractConfig


def steal(
    teacher_url: Annotated[str, typer.Option(help="Base URL of the black box")],
    budget: Annotated[int, typer.Option(help="Most answered histories to pay for, all rounds")],
    out: Annotated[
        Path, typer.Option(help="Run directory: probe set, rounds, students; student/ at the end")
    ],
    api_key: Annotated[
        str | None,
        typer.Option(help=f"API key (default: ${KEY_VARIABLES[0]} or ${KEY_VARIABLES[1]})"),
    ] = None,
    source: Annotated[
        str,
        typer.Option(
            help=f"{' | '.join(SOURCES)} (data-free: later rounds grow candidates, --grow-from)"
        ),
    ] = "seeded",
    dataset: Annotated[
        str | None,
        typer.Option(help="Seeded: ml-100k, synthetic[:USERS:ITEMS] or a file (default: none)"),
    ] = None,
    max_length: Annotated[int, typer.Option(help="Data-free: longest sequence")] = 50,
    k: Annotated[int, typer.Option(help="Items per answer")] = 100,
    api_profile: Annotated[
        str | None,
        typer.Option(help="mlflow, open-inference or a TOML profile file (default: recmimic's)"),
    ] = None,
    first_share: Annotated[
        float, typer.Option(help="Share of the budget paid before the first student")
    ] = AdaptiveConfig.first_share,
    rounds: Annotated[
        int, typer.Option(help="Rounds, the first included; their ends grow geometrically")
    ] = AdaptiveConfig.rounds,
    score: Annotated[
        str,
        typer.Option(help=f"What makes a query worth paying for: {' | '.join(get_args(Score))}"),
    ] = AdaptiveConfig.score,
    pool: Annotated[int, typer.Option(help="Candidates scored per round")] = AdaptiveConfig.pool,
    group_share: Annotated[
        float,
        typer.Option(
            help="Most queries of one user (or grown sequence) in a round, as a "
            "multiple of its even share"
        ),
    ] = AdaptiveConfig.group_share,
    round_epochs: Annotated[
        int, typer.Option(help="Epochs of the students between rounds")
    ] = AdaptiveConfig.round_epochs,
    grow_from: Annotated[
        str,
        typer.Option(
            help="Data-free candidates: student (sequences grown from the student's answers) "
            "| teacher (a paid query and one item of its paid answer)"
        ),
    ] = AdaptiveConfig.grow_from,
    objective: Annotated[str, typer.Option(help=" | ".join(get_args(Objective)))] = "bahsd",
    max_epochs: Annotated[
        int, typer.Option(help="Epochs of the final student")
    ] = DistillConfig.max_epochs,
    seed: Annotated[int, typer.Option()] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars")] = True,
) -> None:
    """Extract and distill in rounds: each round pays for the queries the student is least
    sure of. Resumes an interrupted run in the round it was in."""
    n_sequences = {"n_sequences": budget} if source != "seeded" else {}  # the budget ends it
    extract = ExtractConfig(
        teacher_url=teacher_url,
        api_key=api_key_from(api_key),
        budget=budget,
        out=out,
        source=source,  # type: ignore[arg-type]  # checked by ExtractConfig
        dataset=dataset,
        max_length=max_length,
        k=k,
        seed=seed,
        api_profile=api_profile,
        **n_sequences,
    )
    adaptive = AdaptiveConfig(
        first_share=first_share,
        rounds=rounds,
        score=score,  # type: ignore[arg-type]  # checked by AdaptiveConfig
        pool=pool,
        group_share=group_share,
        round_epochs=round_epochs,
        grow_from=grow_from,  # type: ignore[arg-type]  # checked by AdaptiveConfig
    )
    problem = adaptive.problem_with(source)
    if problem is not None:
        raise ValueError(problem)
    distill = DistillConfig(
        probes=out,
        out=out,
        objective=ObjectiveConfig(name=objective),  # type: ignore[arg-type]
        max_epochs=max_epochs,
        seed=seed,
        progress=progress,
    )
    from adaptive.run import RoundHooks, RoundRecord, StealConfig  # torch: options first
    from adaptive.run import steal as run_steal

    def show(record: RoundRecord) -> None:
        heldout = record.heldout or {}
        typer.echo(
            f"round {record.round}: paid {record.paid_total} of {budget}, held-out Agr@10 "
            f"{heldout.get('agr10', float('nan')):.3f}"
        )

    config = StealConfig(out=out, extract=extract, distill=distill, adaptive=adaptive)
    run_steal(config, progress=progress, hooks=RoundHooks(on_round=show))
    typer.echo(f"student -> {config.distill.out}")
