"""What one distillation run is told: the probe set, the student, the objective, the schedule.

No torch here: the command line builds and checks these before it imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from distill.reliability import ReliabilityConfig
from seqrec.models.config import ModelConfig

Objective = Literal["bahsd", "bahsd_noprobe", "listwise", "dfme", "kl", "bahsd_gated"]
# The terms each objective computes (their formulas and how they combine: `distill.objectives`).
TERMS: dict[str, frozenset[str]] = {
    "bahsd": frozenset({"list", "rank", "nce"}),
    "bahsd_noprobe": frozenset({"list", "rank", "nce"}),
    "listwise": frozenset({"list"}),
    "dfme": frozenset({"rank"}),
    "kl": frozenset({"kl"}),
    "bahsd_gated": frozenset({"kl", "rank", "nce"}),
}


@dataclass
class ObjectiveConfig:
    """Which objective to train with and its hyper-parameters (the formulas, and why these
    defaults: `distill.objectives`)."""

    name: Objective = "bahsd"
    # Listwise term (Plackett-Luce over the teacher's ordered answer, `bahsd`, `listwise`).
    list_focus: int = 10  # answer slots at full weight
    list_beyond: float = 1.0  # weight of the slots below them (1: every slot counts alike)
    # What each listwise step competes against besides the answer's lower items: every other
    # catalogue item, or the hinge's sampled negatives (uniform, so mostly unpopular items).
    list_outside: Literal["catalogue", "sampled"] = "catalogue"
    list_tau_min: float = 1.0  # per-answer temperature range, from reliability (`bahsd`)
    list_tau_max: float = 1.0
    hinge_weight: float = 1.0  # L_rank beside the listwise term (`bahsd`)
    # How far reliability tilts each answer between the listwise term (reliable answers) and
    # the hinge (unreliable ones): weights 1 +- spread * (2 w(c) - 1); 0 = no tilt.
    reliability_spread: float = 0.5
    kappa: float = 0.1  # confidence weight slope
    delta: float | None = None  # confidence threshold; None = batch median of c
    hard_split: bool = False
    alpha: float = 0.1  # InfoNCE weight
    margin: float = 0.5  # adjacent top-k pairs
    negative_margin: float = 0.5  # top-k item over a sampled negative
    top_pairs: int | None = None  # adjacent top-k pairs used by the hinge; None = all
    n_negatives: int | None = 100  # hinge negatives; None: every item of the pool
    nce_temperature: float = 0.2
    # `kl` and `bahsd_gated` (recmimic's first BAHSD, DESIGN section 6):
    tau_min: float = 1.0  # dynamic temperature range of the gated KL
    tau_max: float = 4.0
    kl_tau: float = 2.0  # fixed temperature of the "kl" baseline
    # lambda_KL of `bahsd_gated`: tau^2 KL runs at 5-25 where the hinge runs near 2, and at 1
    # the KL steered the gradient (held-out Agr@10 0.670 -> 0.770 at 0.1, quick seeded probes;
    # bench/results/fidelity-history.md)
    kl_weight: float = 0.1
    # Score-aware term, added to any objective where an answer came with the black box's scores
    # (`distill.objectives.score_distillation`): its weight (0: learn from ranks alone) and the
    # temperature of both softmaxes over the standardised scores.
    score_weight: float = 0.0
    score_temperature: float = 1.0

    def identity(self) -> dict[str, Any]:
        """The settings that shape training: the score term's only when it is on, so that a
        student trained before scores existed (a bench's finished point, a checkpoint) keeps
        its identity."""
        settings = asdict(self)
        if self.score_weight == 0:
            del settings["score_weight"], settings["score_temperature"]
        return settings

    @property
    def terms(self) -> frozenset[str]:
        return TERMS[self.name]

    @property
    def needs_views(self) -> bool:
        """Whether the student must also encode a truncated view of each example (InfoNCE)."""
        return "nce" in self.terms and self.alpha != 0

    def __post_init__(self) -> None:
        if self.name not in get_args(Objective):
            known = sorted(get_args(Objective))
            raise ValueError(f"unknown objective {self.name!r}; expected one of {known}")
        if not (math.isfinite(self.score_weight) and self.score_weight >= 0):
            raise ValueError(f"score_weight must be finite and at least 0, got {self.score_weight}")
        if not (math.isfinite(self.score_temperature) and self.score_temperature > 0):
            raise ValueError(
                f"score_temperature must be finite and above 0, got {self.score_temperature}"
            )


@dataclass
class DistillConfig:
    """One run. `model.n_items` is filled in from the probe set's catalogue.

    `view_examples`: learn from each answered truncated view as an example of its own, besides
    the full views. On for every objective by default, so all of them learn from every paid
    answer; BAHSD also uses the views as probes (reliability, InfoNCE). On ML-100k (seeded,
    10,000 paid answers, seed 0) this lifted BAHSD's held-out Agr@10 from 0.70 to 0.75 and its
    test NDCG@10 from 0.096 to 0.104.
    """

    probes: Path
    out: Path
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    reliability: ReliabilityConfig = field(default_factory=ReliabilityConfig)
    view_examples: bool = True
    # Learn from the first N answers only, in the order the extraction asked them: what a run
    # with budget N would have paid (`distill.probes.first_answers`). None: every answer.
    answers: int | None = None
    init_from: Path | None = None  # an earlier student to start from (`distill.warm`)
    heldout: float = 0.1  # share of queries held out for model selection (agreement)
    # Probe sets are small (a few thousand queries): 3e-3 and batches of 128 reached held-out
    # Agr@10 0.65 in 20 epochs on ML-100k probes where 1e-3 and 256 reached 0.46.
    lr: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 100
    patience: int = 10  # epochs without better held-out Agr@10 before stopping
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        self.probes, self.out = Path(self.probes), Path(self.out)
        self.init_from = None if self.init_from is None else Path(self.init_from)
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (InfoNCE needs in-batch negatives)")
        if self.answers is not None and self.answers < 2:
            raise ValueError(f"answers must be at least 2, got {self.answers}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("max_epochs and patience must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload.update(probes=str(self.probes), out=str(self.out))
        if self.init_from is None:
            del payload["init_from"]  # a cold start's settings read as they did before
        else:
            payload["init_from"] = str(self.init_from)
        return payload
