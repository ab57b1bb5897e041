"""Interactions written under a user id, for the wires that answer a user rather than a history.

Recombee and Amazon Personalize take events first (`POST /batch/`, `PutEvents`) and are then
asked for a user's recommendations; the history they rank is what this store kept. It lives in
process memory, bounded in users (the least recently used is dropped) and in items per user (the
most recent kept), so a client that never deletes its sessions cannot grow the server without
limit. Being in process, it is not shared between uvicorn workers: a session written through one
worker would be unknown to the next, so these wires are served by one process only
(`check_workers`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence

SESSION_WIRES = frozenset({"recombee", "personalize"})


def check_workers(wire: str, workers: int) -> None:
    """Refuse several worker processes for a wire whose sessions live in one process."""
    if wire in SESSION_WIRES and workers > 1:
        raise ValueError(
            f"wire {wire!r} keeps its users' interactions in process memory: serve it with one "
            f"worker, not {workers}"
        )


class SessionStore:
    """User id -> recent item ids (oldest first); touched only from the event loop thread."""

    def __init__(self, max_users: int, max_history: int) -> None:
        self.max_users, self.max_history = max_users, max_history
        self._histories: OrderedDict[str, deque[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._histories)

    def extend(self, user: str, items: Sequence[str]) -> None:
        """Append `items` to the user's history, evicting the least recently used user if full."""
        history = self._histories.get(user)
        if history is None:
            history = self._histories[user] = deque(maxlen=self.max_history)
        self._histories.move_to_end(user)
        history.extend(items)
        while len(self._histories) > self.max_users:
            self._histories.popitem(last=False)

    def history(self, user: str) -> list[str] | None:
        """The user's history, or None for a user never written, forgotten or evicted."""
        history = self._histories.get(user)
        if history is None:
            return None
        self._histories.move_to_end(user)
        return list(history)

    def forget(self, user: str) -> bool:
        """Drop the user; False when there was nothing to drop."""
        return self._histories.pop(user, None) is not None
