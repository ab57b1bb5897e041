"""The demo's settings, importable without torch: `recmimic demo --help` shows their defaults
and checks the port before `service.demo` (and torch) is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class DemoConfig:
    """Every setting of the demo; the CLI's options override these defaults."""

    workdir: Path = Path("runs/demo")
    dataset: str = "ml-100k"
    arch: str = "sasrec"
    seed: int = 0
    retrain: bool = False
    max_epochs: int | None = None  # teacher; None: the trainer's default (early stopping decides)
    port: int = 18765  # fixed, so a resumed job asks the same endpoint its cache knows
    # The job. Seeded: the attacker holds ML-100k's training split and asks its prefixes.
    source: Literal["seeded", "autoregressive", "frequency"] = "seeded"
    budget: int = (
        8000  # paid answers for probing (evaluation has its own budget: one per test user)
    )
    n_sequences: int = 200  # data-free sources only: sequences grown from random start items
    # Cap on the student's epochs, so the whole demo stays well under 15 minutes on 2 cores: an
    # epoch takes about 9 s there (24 s before the CPU dropout and last-position shortcut), and
    # with 24 the best epoch was still the last one.
    epochs: int = 40
    poll_s: float = 3.0  # how often the job's status is read and shown
