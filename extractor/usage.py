"""Settle the budget ledger with the black box's own count of what it billed.

A killed run leaves the requests it had on the wire counted as spent (`extractor.budget`): the
ledger cannot know whether they reached the black box. When the black box reports usage per key
(recmimic's `GET /v1/usage`, `{"used": N}`), a resumed run asks it. The count alone says nothing
about this run (the key may have been used before), so the run records it when its out
directory's ledger is new (`usage.json`: the count then and the ledger's spent then); on every
resume what the black box billed this out directory is the count now minus the count then.

- Where the ledger holds more, the difference never reached the bill and is given back
  (`Budget.reconcile`), never below the answers received: whatever the count says (a counter
  reset, another client on the key), only units charged without an answer can be given back.
- Where the bill is higher, another client shares the key or the black box billed answers that
  were lost on the way back: nothing is taken, and the run says so.
- Requests of a killed run may still be in the black box's hands for a while (one that bills a
  request when it ends). So the ledger is settled only once it has been left alone for a
  request's timeout; a resume sooner than that says it did not settle, and a later one will.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from extractor.budget import Budget
from extractor.client import BlackBoxClient
from extractor.errors import BlackBoxError
from seqrec.hashing import write_atomically

USAGE_FILENAME = "usage.json"
USAGE_PATH = "/v1/usage"
log = logging.getLogger("extractor.usage")


@dataclass(frozen=True)
class UsageMark:
    """The black box's count for this key, and the ledger's spent, at the same moment."""

    used: int
    spent: int

    @classmethod
    def read(cls, path: Path) -> UsageMark | None:
        try:
            data = json.loads(path.read_text())
            return cls(used=int(data["used"]), spent=int(data["spent"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        write_atomically(path, json.dumps({"used": self.used, "spent": self.spent}).encode())


async def reported_usage(client: BlackBoxClient) -> int | None:
    """The black box's count of answers billed to this key; None when it reports none."""
    try:
        body = await client.get_json(USAGE_PATH)
    except BlackBoxError as exc:
        log.info("no usage count from the black box: %s", exc)
        return None
    used = body.get("used") if isinstance(body, dict) else None
    return used if isinstance(used, int) and not isinstance(used, bool) and used >= 0 else None


async def settle_with_usage(
    client: BlackBoxClient, budget: Budget, out: Path, quiet_s: float
) -> str | None:
    """Mark the black box's count at a new ledger, or settle a resumed one with it.

    Returns one line saying what a resume found (None for a new run, or a black box that
    reports no usage); `quiet_s` is how long the ledger must have been left alone first.
    """
    used = await reported_usage(client)
    if used is None:
        return None
    path = out / USAGE_FILENAME
    mark = UsageMark.read(path)
    if mark is None:
        if budget.spent == 0:
            UsageMark(used=used, spent=0).write(path)
            return None
        return "not settled with the black box's usage: no count was marked when this run began"
    if used < mark.used:
        return (
            f"not settled with the black box's usage: its count went down ({mark.used} -> "
            f"{used}; reset?)"
        )
    billed = mark.spent + used - mark.used
    spent = budget.spent
    if billed > spent:
        return (
            f"the black box billed {billed - spent} more than the ledger's {spent} for this run: "
            "another client may share the key; the ledger is kept"
        )
    if billed == spent:
        return f"the ledger matches the black box's usage ({spent} paid)"
    quiet_for = time.time() - os.stat(budget.ledger_path).st_mtime
    if quiet_for < quiet_s:
        return (
            f"not settled yet: the ledger holds {spent - billed} more than the black box billed, "
            f"but the last run stopped {quiet_for:.0f} s ago and its requests may still be "
            f"billed; a run after {quiet_s:.0f} s settles it"
        )
    given_back = budget.reconcile(billed)
    return (
        f"settled with the black box's usage: {given_back} units the ledger held as spent were "
        f"never billed and are given back (spent {spent} -> {budget.spent})"
    )
