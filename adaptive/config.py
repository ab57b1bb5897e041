"""How an adaptive extraction splits its budget into rounds and picks each round's queries.

No torch here: the command line checks these before it imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

Score = Literal["views", "margin", "committee", "neighbour", "random"]
GrowFrom = Literal["student", "teacher"]


class StealError(RuntimeError):
    """A round could not pay for its queries: the black box refused them or the run was
    stopped; what was paid stays on disk and a rerun resumes."""


@dataclass(frozen=True)
class AdaptiveConfig:
    """Rounds and scoring.

    The rounds end at paid totals growing geometrically from `first_share` of the budget to the
    whole budget over `rounds` rounds (0.2 and 4: 20%, 34%, 58%, 100%), or at `boundaries` when
    given (the leakage bench sets them to its budgets, so each budget is a round's end).
    Each later round scores `pool` unpaid candidates with the last round's student and pays for
    the best, no user (seeded) or grown sequence (data-free) giving more than `group_share`
    times its even share of the round, so one round does not buy near-duplicates. Students
    between rounds train for at most `round_epochs` epochs (patience `round_patience`) from the
    previous round's weights; the final one for the distillation's full schedule.
    Data-free candidates `grow_from` the student's answers (whole sequences) or the teacher's
    paid ones (each a paid query and one item of its answer).
    """

    first_share: float = 0.2
    rounds: int = 4
    boundaries: tuple[int, ...] | None = None
    score: Score = "views"
    pool: int = 20_000
    group_share: float = 2.0
    round_epochs: int = 20
    round_patience: int = 5
    grow_from: GrowFrom = "student"

    def __post_init__(self) -> None:
        if self.score not in get_args(Score):
            raise ValueError(f"unknown score {self.score!r}; expected one of {get_args(Score)}")
        if self.grow_from not in get_args(GrowFrom):
            raise ValueError(
                f"unknown grow_from {self.grow_from!r}; expected one of {get_args(GrowFrom)}"
            )
        if not 0 < self.first_share <= 1:
            raise ValueError(f"first_share must be in (0, 1], got {self.first_share}")
        if self.rounds < 1 or self.pool < 1:
            raise ValueError("rounds and pool must be at least 1")
        if not self.group_share >= 1:
            raise ValueError(f"group_share must be at least 1, got {self.group_share}")
        if self.round_epochs < 1 or self.round_patience < 1:
            raise ValueError("round_epochs and round_patience must be at least 1")
        if self.boundaries is not None:
            object.__setattr__(self, "boundaries", tuple(int(b) for b in self.boundaries))
            ends = self.boundaries
            if not ends or ends[0] < 2 or any(b <= a for a, b in zip(ends, ends[1:], strict=False)):
                raise ValueError(f"boundaries must rise from at least 2, got {list(ends)}")

    def problem_with(self, source: str) -> str | None:
        """Why these rounds cannot run with the query `source`, or None."""
        if self.score == "neighbour" and source != "seeded" and self.grow_from != "teacher":
            return (
                "the neighbour score compares the student with paid answers near each "
                "candidate: it needs the seeded source or data-free candidates grown from "
                "the teacher's answers (grow_from 'teacher')"
            )
        return None

    def schedule(self, budget: int) -> list[int]:
        """The paid total at the end of each round; the last is the budget."""
        if self.boundaries is not None:
            ends = [b for b in self.boundaries if b < budget]
            return [*ends, budget]
        first = max(2, round(budget * self.first_share))
        if self.rounds == 1 or first >= budget:
            return [budget]
        ratio = (budget / first) ** (1 / (self.rounds - 1))
        return sorted({round(first * ratio**r) for r in range(self.rounds - 1)} | {budget})

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["boundaries"] = None if self.boundaries is None else list(self.boundaries)
        return payload
