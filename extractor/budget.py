"""The query budget: a hard ceiling on paid answers under concurrency, retries and restarts.

Protocol: `reserve(n)` before a request is sent, `settle(...)` once its fate is known. A
reservation is on disk before it is granted, so a process killed with requests in flight leaves
those units counted as spent: a restarted run can never pay past the limit, at worst it loses the
units whose answers never arrived. Units are given back only when the black box certainly did not
charge them (the client's `charged_for` decides); anything uncertain (a timeout after sending, a
truncated body, an unknown 5xx) stays spent. The extractor reserves per attempt, so a retry of a
request that was billed and lost is paid again, as the black box would bill it.

Only what can overspend waits for the disk. A settlement can only give units back or count
answers, so losing it to a kill errs on the safe side (units stay spent): it is written with the
next write or by `close`. A reservation waits only when it goes past the spent count already on
disk (units given back leave room that needs no write). Every request used to wait for two
fsyncs while holding a connection slot: measured, a third of a single-endpoint run had fewer than
a quarter of its requests in flight.

The ledger is a small SQLite file (WAL, `synchronous=FULL`: every commit is fsync'd) held with an
exclusive lock for the life of the `Budget`, so two live runs can never share, and overspend, one
ledger; the operating system drops the lock when a process dies, so a restart is never blocked.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path


class BudgetError(RuntimeError):
    """The ledger cannot be opened: unreadable, or in use by another live run."""


class Budget:
    """At most `limit` units are ever granted over all runs sharing `ledger_path`."""

    def __init__(self, limit: int, ledger_path: str | Path) -> None:
        if limit < 0:
            raise ValueError(f"budget limit must be >= 0, got {limit}")
        self.limit = limit
        self.ledger_path = Path(ledger_path)
        self._db, (self._spent, self._answered, self._version) = _open_ledger(self.ledger_path)
        self._outstanding = 0  # granted and not yet settled by this process
        self._on_disk = (self._spent, self._answered)  # spent is never below what was granted
        self._flush_lock = asyncio.Lock()
        self._db_lock = threading.Lock()

    @property
    def spent(self) -> int:
        """Units that are or may have been paid, including reservations still in flight."""
        return self._spent

    @property
    def answered(self) -> int:
        """Units settled with an answer; `spent - answered` were lost or are still in flight."""
        return self._answered

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self._spent)

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0

    def report(self) -> str:
        """One line for the end of a run: what was used and what was lost."""
        lost = self._spent - self._answered - self._outstanding
        return (
            f"budget: spent {self._spent} of {self.limit} ({self._answered} answered, "
            f"{lost} charged without an answer, {self.remaining} left)"
        )

    async def reserve(self, n: int) -> int:
        """Grant up to `n` units, covered on disk before returning; 0 once the budget is spent.

        Check and increment happen with no await between them, so concurrent tasks on one event
        loop can never be granted more than the limit together.
        """
        if n < 0:
            raise ValueError(f"cannot reserve {n} units")
        granted = min(n, self.remaining)
        if granted == 0:
            return 0
        self._spent += granted
        self._outstanding += granted
        if self._spent > self._on_disk[0]:
            await self._cover(self._spent)
        return granted

    async def settle(self, reserved: int, answered: int, charged: int) -> None:
        """Close a reservation: `answered` got answers, `charged` may have been paid.

        Requires `answered <= charged <= reserved`; the `reserved - charged` units the server
        certainly did not charge are given back. Returns at once: the new state reaches disk
        with the next write or `close` (see the module docstring).
        """
        if not 0 <= answered <= charged <= reserved:
            raise ValueError(f"need 0 <= answered ({answered}) <= charged ({charged}) <= reserved")
        if reserved > self._outstanding:
            raise ValueError(f"settling {reserved} units but only {self._outstanding} are reserved")
        self._outstanding -= reserved
        self._spent -= reserved - charged
        self._answered += answered

    async def _cover(self, needed: int) -> None:
        """Put a spent count of at least `needed` on disk; callers waiting meanwhile are covered
        by the same write when it reaches them (group commit)."""
        async with self._flush_lock:
            if needed <= self._on_disk[0]:
                return
            state = (max(needed, self._spent), self._answered)
            self._version += 1
            await asyncio.to_thread(self._write, *state, self._version)
            self._on_disk = state

    def _write(self, spent: int, answered: int, version: int) -> None:
        # The version guard keeps a write from a cancelled task, finishing late in its thread,
        # from overwriting a newer state.
        with self._db_lock:
            self._db.execute(
                "UPDATE ledger SET spent = ?, answered = ?, version = ?"
                " WHERE id = 1 AND version < ?",
                (spent, answered, version, version),
            )

    def close(self) -> None:
        """Write the last settlements and release the ledger's lock."""
        if (self._spent, self._answered) != self._on_disk:
            self._version += 1
            self._write(self._spent, self._answered, self._version)
            self._on_disk = (self._spent, self._answered)
        with self._db_lock:
            self._db.close()


def _open_ledger(path: Path) -> tuple[sqlite3.Connection, tuple[int, int, int]]:
    """Open (or create) the ledger, take its exclusive lock and read (spent, answered, version)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0.25)
    except (sqlite3.Error, OSError) as exc:
        raise BudgetError(f"cannot open the budget ledger {path}: {exc}") from None
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " spent INTEGER NOT NULL, answered INTEGER NOT NULL, version INTEGER NOT NULL)"
        )
        # A write takes the exclusive lock now, not at the first reservation.
        db.execute("INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0)")
        row = db.execute("SELECT spent, answered, version FROM ledger WHERE id = 1").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        if "locked" in str(exc):
            raise BudgetError(
                f"budget ledger {path} is in use by another running process"
            ) from None
        raise BudgetError(f"cannot use the budget ledger {path}: {exc}") from None
    return db, row
