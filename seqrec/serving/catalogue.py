"""The catalogue's own item ids (strings) and the model's dense indices, both ways.

Clients only ever see raw ids: a real API exposes its catalogue, never its embedding rows.
"""

from __future__ import annotations

from collections.abc import Sequence

SHOW_UNKNOWN = 5  # unknown ids named in an error message


class ContractError(ValueError):
    """A request the top-k contract refuses (unknown ids, empty history, k out of range)."""


class Catalogue:
    """Raw id `item_ids[i - 1]` is dense index `i` (0 is padding)."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        self._dense = {raw: i for i, raw in enumerate(self.item_ids, start=1)}
        if len(self._dense) != len(self.item_ids):
            raise ValueError("the artifact's item ids are not unique")

    def __len__(self) -> int:
        return len(self.item_ids)

    def to_dense(self, history: Sequence[str | int], where: str = "history") -> list[int]:
        """Dense indices of a history; ints are read as raw ids (ML-100k ids look like numbers)."""
        raw = [str(item) for item in history]
        unknown = list(dict.fromkeys(item for item in raw if item not in self._dense))
        if unknown:
            named = ", ".join(repr(item) for item in unknown[:SHOW_UNKNOWN])
            more = f" and {len(unknown) - SHOW_UNKNOWN} more" if len(unknown) > SHOW_UNKNOWN else ""
            raise ContractError(f"{where}: unknown item ids {named}{more}")
        return [self._dense[item] for item in raw]

    def to_raw(self, dense: Sequence[int]) -> list[str]:
        return [self.item_ids[i - 1] for i in dense]

    def page(self, offset: int, limit: int) -> list[str]:
        return self.item_ids[offset : offset + limit]
