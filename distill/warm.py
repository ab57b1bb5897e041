"""Warm start: a new student begins from an earlier student's weights (adaptive rounds).

Between rounds the probe set grows and, without a catalogue listing, so may the items the
student knows; a row of the item embedding is carried over by the item's raw id, so an item
keeps what it learnt wherever its dense index lands. Every other tensor is carried over when
its name and shape match, and left at its fresh initialisation otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seqrec.artifacts import load_artifact
from seqrec.models.base import SequentialRecommender

ITEM_TABLE = "item_emb.weight"  # row i (1-based) is item_ids[i - 1]; row 0 is padding


@torch.no_grad()
def warm_start(model: SequentialRecommender, earlier: Path, item_ids: list[str]) -> int:
    """Copy `earlier`'s weights into `model` (whose items are `item_ids`); returns how many
    tensors were carried over whole or by item."""
    before = load_artifact(earlier)
    old_rows = {raw: row for row, raw in enumerate(before.info.item_ids, start=1)}
    old_state = before.model.state_dict()
    state = model.state_dict()
    carried = 0
    for name, tensor in state.items():
        old = old_state.get(name)
        if old is None:
            continue
        if name == ITEM_TABLE and old.shape[1:] == tensor.shape[1:]:
            pairs = [(row, old_rows[raw]) for row, raw in enumerate(item_ids, 1) if raw in old_rows]
            if pairs:
                new_index, old_index = (torch.tensor(side) for side in zip(*pairs, strict=True))
                tensor[new_index] = old[old_index].to(tensor.dtype)
                tensor[0] = old[0].to(tensor.dtype)
                carried += 1
        elif old.shape == tensor.shape:
            tensor.copy_(old)
            carried += 1
    return carried
