"""`recmimic distill` and `recmimic evaluate`: a probe set into a student, a student into a report.

Thin: options become the stage's config dataclasses; `distill.run.distill` and
`distill.fidelity.evaluate_student` do the work. Bad options raise ValueError, which the
`recmimic` entry point turns into one line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from distill.config import DistillConfig, Objective, ObjectiveConfig
from extractor.cli import KEY_VARIABLES, all_or_count, api_key_from
from seqrec.models.config import ARCHS, ModelConfig
from seqrec.options import default_of


def distill(
    probes: Annotated[Path, typer.Option(help="Extraction directory (`recmimic extract --out`)")],
    out: Annotated[Path, typer.Option(help="Student artifact directory to write")],
    objective: Annotated[str, typer.Option(help=" | ".join(get_args(Objective)))] = "bahsd",
    arch: Annotated[str, typer.Option(help=f"Student backbone: {' | '.join(ARCHS)}")] = "sasrec",
    experts: Annotated[int, typer.Option(help="HPSERec tail experts (0 = off, else >= 2)")] = 0,
    hidden: Annotated[
        int | None, typer.Option(show_default=default_of(ModelConfig, "hidden"))
    ] = None,
    max_len: Annotated[
        int | None,
        typer.Option(
            help="Most recent items seen", show_default=default_of(ModelConfig, "max_len")
        ),
    ] = None,
    view_examples: Annotated[
        bool | None,
        typer.Option(
            help="Also learn from each answered truncated view",
            show_default="view-examples" if DistillConfig.view_examples else "no-view-examples",
        ),
    ] = None,
    reliability: Annotated[str, typer.Option(help="overlap | rbo")] = "overlap",
    normalise_reliability: Annotated[
        bool, typer.Option(help="Length-normalised reliability")
    ] = False,
    hard_split: Annotated[bool, typer.Option(help="Confidence weight in {0, 1}")] = False,
    negatives: Annotated[
        str | None,
        typer.Option(
            help="Sampled negatives per example, or 'all' items",
            show_default=default_of(ObjectiveConfig, "n_negatives", "all"),
        ),
    ] = None,
    answers: Annotated[
        int | None,
        typer.Option(
            help="Learn from the first N answers only, as if the budget had been N",
            show_default=default_of(DistillConfig, "answers", "all"),
        ),
    ] = None,
    kl_weight: Annotated[
        float | None,
        typer.Option(
            help="bahsd_gated: weight of its KL branch against the low branch",
            show_default=default_of(ObjectiveConfig, "kl_weight"),
        ),
    ] = None,
    score_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the score-aware term where answers came with the black box's "
            "scores (0: ranks alone)",
            show_default=default_of(ObjectiveConfig, "score_weight"),
        ),
    ] = None,
    score_temperature: Annotated[
        float | None,
        typer.Option(
            help="Temperature of the score-aware term over standardised scores",
            show_default=default_of(ObjectiveConfig, "score_temperature"),
        ),
    ] = None,
    max_epochs: Annotated[
        int | None, typer.Option(show_default=default_of(DistillConfig, "max_epochs"))
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Epochs without a better held-out Agr@10 before stopping",
            show_default=default_of(DistillConfig, "patience"),
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(show_default=default_of(DistillConfig, "batch_size"))
    ] = None,
    lr: Annotated[float | None, typer.Option(show_default=default_of(DistillConfig, "lr"))] = None,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="auto (cuda when available), cpu or cuda")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Train a student on a probe set with BAHSD (or a baseline); writes a servable artifact.

    Options left out keep the defaults of `DistillConfig` and `ModelConfig`.
    """
    from distill.probes import probe_directory
    from distill.reliability import ReliabilityConfig

    model = given(arch=arch, experts=experts, hidden=hidden, max_len=max_len)
    schedule = given(
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        view_examples=view_examples,
        answers=answers,
    )
    config = DistillConfig(
        probes=probes,
        out=out,
        model=ModelConfig(**model),
        objective=ObjectiveConfig(
            name=objective,  # type: ignore[arg-type]
            hard_split=hard_split,
            **given(
                kl_weight=kl_weight,
                score_weight=score_weight,
                score_temperature=score_temperature,
            ),
            **({} if negatives is None else {"n_negatives": negatives_from(negatives)}),
        ),
        reliability=ReliabilityConfig(measure=reliability, normalise=normalise_reliability),  # type: ignore[arg-type]
        seed=seed,
        device=device,
        progress=progress,
        **schedule,
    )
    probe_directory(config.probes)
    from distill.run import distill as run_distill  # torch: only once the options are good

    summary = run_distill(config)
    typer.echo(
        f"student -> {out}: held-out Agr@10 {summary.heldout['agr10']:.3f}"
        f"  Agr@1 {summary.heldout['agr1']:.3f}  ({summary.examples} examples,"
        f" best epoch {summary.best_epoch}, {summary.seconds:.0f}s)"
    )
    if summary.unlisted_items:
        typer.echo(
            f"note: the answers named {summary.unlisted_items} items the black box's catalogue "
            "listing lacks; the student learnt them too"
        )


def negatives_from(text: str) -> int | None:
    """`--negatives`: a count, or 'all' (None in `ObjectiveConfig`: every catalogue item)."""
    count = all_or_count(text, "--negatives")
    return None if count == "all" else count


def given(**options: Any) -> dict[str, Any]:
    """The options the user set; the config dataclasses own every default."""
    return {name: value for name, value in options.items() if value is not None}


def evaluate(
    teacher: Annotated[str, typer.Option(help="Teacher artifact directory or black-box URL")],
    student: Annotated[Path, typer.Option(help="Student artifact directory")],
    dataset: Annotated[str, typer.Option(help="ml-100k, synthetic[:USERS:ITEMS] or a file")],
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: STUDENT/report)")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help=f"Teacher URL's API key (default: ${KEY_VARIABLES[0]})"),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Most answers to pay a teacher URL for this evaluation, all runs (default: one "
            "per test user; answers lost on the way are billed too)"
        ),
    ] = None,
    api_profile: Annotated[
        str | None,
        typer.Option(
            help="How to talk to a teacher URL: mlflow, open-inference or a TOML profile file "
            "(default: recmimic's own contract)"
        ),
    ] = None,
) -> None:
    """Accuracy of teacher and student on the real test split, and their agreement, per group.

    A teacher URL's answers are kept under OUT/teacher-answers: a rerun pays nothing more, and
    a killed evaluation resumes."""
    from seqrec.artifact_files import artifact_directory

    if budget is not None and budget < 1:
        raise ValueError(f"--budget must be at least 1 paid answer, got {budget}")
    if not teacher.startswith(("http://", "https://")):  # a mistyped path fails before torch
        if budget is not None or api_profile is not None:
            raise ValueError(
                "--budget and --api-profile apply to a teacher URL: a local teacher is not asked"
            )
        artifact_directory(teacher)
    artifact_directory(student)
    from distill.fidelity import EvaluateConfig, evaluate_student

    config = EvaluateConfig(
        teacher=teacher,
        student=student,
        dataset=dataset,
        out=out if out is not None else student / "report",
        api_key=api_key_from(api_key) if teacher.startswith(("http://", "https://")) else None,
        budget=budget,
        api_profile=api_profile,
    )
    report, paths = evaluate_student(config)
    for who in ("teacher", "student"):
        overall = report[who]["overall"]
        typer.echo(f"{who:<8} NDCG@10 {overall['NDCG@10']:.4f}  HR@10 {overall['HR@10']:.4f}")
    agreement = report["agreement"]["overall"]
    typer.echo(f"agreement Agr@1 {agreement['agr1']:.3f}  Agr@10 {agreement['agr10']:.3f}")
    run = report["run"]
    paid, probing_budget = run["paid"], run["budget"]
    probing = "?" if paid["probing"] is None else paid["probing"]
    evaluation = (
        f"{paid['evaluation']} for evaluation (budget {run['evaluation_budget']}, one per test "
        "user)"
        if config.teacher_is_url
        else "nothing for evaluation (a local teacher)"
    )
    typer.echo(
        f"paid     {probing} answers for probing (budget "
        f"{'?' if probing_budget is None else probing_budget}), {evaluation}"
    )
    if run["unknown_teacher_items"]:
        typer.echo(
            f"note     {run['unknown_teacher_items']} of the teacher's answer slots name items "
            f"the dataset does not have; they count as misses"
        )
    for kind, path in paths.items():
        typer.echo(f"{kind:<8} {path}")
