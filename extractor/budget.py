"""The query budget: a hard ceiling on paid answers under concurrency, retries and restarts.

Protocol: `reserve(n)` before a request is sent, `settle(...)` once its fate is known. A
reservation is in the ledger before it is granted, so a process killed with requests in flight
leaves those units counted as spent: a restarted run can never pay past the limit, at worst it
loses the units whose answers never arrived. Units are given back only when the black box
certainly did not charge them (the client's `charged_for` decides); anything uncertain (a timeout
after sending, a truncated body, an unknown 5xx) stays spent. The extractor reserves per attempt,
so a retry of a request that was billed and lost is paid again, as the black box would bill it.

Only what can overspend is written at once. A settlement can only give units back or count
answers, so losing it to a kill errs on the safe side (units stay spent): it is written with the
next write or by `close`. A reservation is written only when it goes past the spent count already
in the ledger (units given back leave room that needs no write).

Durability, and why a reservation does not wait for the disk. The ledger is a small SQLite file
in WAL mode with `synchronous=NORMAL`: a commit is a `write` into the operating system's page
cache (about 10 us, done inline on the event loop), which survives the death of the process
(SIGKILL, a crash, Ctrl-C) because the kernel still holds it. Only a crash of the machine itself
can lose it, so a background thread fsyncs the log at most `sync_interval_s` after each write,
and `close` checkpoints it: after a power loss, at most that last interval's reservations can be
forgotten. Every reservation used to wait for its own fsync through a worker thread; on 2 busy
cores the thread wake-ups, not the fsync, held each request's connection slot for tens of
milliseconds and kept the single-endpoint extractor at about 0.64 of the teacher's capacity.

The ledger is held with an exclusive lock for the life of the `Budget`, so two live runs can
never share, and overspend, one ledger; the operating system drops the lock when a process dies,
so a restart is never blocked.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

SYNC_INTERVAL_S = 0.2  # the longest a reservation stays exposed to a machine crash


class BudgetError(RuntimeError):
    """The ledger cannot be opened: unreadable, or in use by another live run."""


class Budget:
    """At most `limit` units are ever granted over all runs sharing `ledger_path`."""

    def __init__(
        self, limit: int, ledger_path: str | Path, sync_interval_s: float = SYNC_INTERVAL_S
    ) -> None:
        if limit < 0:
            raise ValueError(f"budget limit must be >= 0, got {limit}")
        self.limit = limit
        self.ledger_path = Path(ledger_path)
        self._db, (self._spent, self._answered) = _open_ledger(self.ledger_path)
        self._outstanding = 0  # granted and not yet settled by this process
        self._in_ledger = (self._spent, self._answered)  # spent is never below what was granted
        self._syncer = _LogSyncer(Path(f"{self.ledger_path}-wal"), sync_interval_s)

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

    def reserve(self, n: int) -> int:
        """Grant up to `n` units, in the ledger before returning; 0 once the budget is spent.

        A plain call, never a wait: concurrent tasks on one event loop cannot interleave inside
        it, so together they are never granted more than the limit, and a request holds no
        connection slot while its reservation is written.
        """
        if n < 0:
            raise ValueError(f"cannot reserve {n} units")
        granted = min(n, self.remaining)
        if granted == 0:
            return 0
        self._spent += granted
        self._outstanding += granted
        if self._spent > self._in_ledger[0]:
            self._write()
        return granted

    def settle(self, reserved: int, answered: int, charged: int) -> None:
        """Close a reservation: `answered` got answers, `charged` may have been paid.

        Requires `answered <= charged <= reserved`; the `reserved - charged` units the server
        certainly did not charge are given back. Reaches the ledger with the next write or
        `close` (see the module docstring).
        """
        if not 0 <= answered <= charged <= reserved:
            raise ValueError(f"need 0 <= answered ({answered}) <= charged ({charged}) <= reserved")
        if reserved > self._outstanding:
            raise ValueError(f"settling {reserved} units but only {self._outstanding} are reserved")
        self._outstanding -= reserved
        self._spent -= reserved - charged
        self._answered += answered

    def _write(self) -> None:
        state = (self._spent, self._answered)
        self._db.execute("UPDATE ledger SET spent = ?, answered = ? WHERE id = 1", state)
        self._in_ledger = state
        self._syncer.wake()

    def close(self) -> None:
        """Write the last settlements, make the ledger durable and release its lock."""
        if (self._spent, self._answered) != self._in_ledger:
            self._write()
        self._syncer.stop()
        self._db.close()  # the last connection checkpoints the log, with an fsync


class _LogSyncer:
    """Fsyncs the ledger's write-ahead log from a thread, at most `interval_s` after a write.

    It opens the log file itself: fsync flushes a file's data whichever descriptor asks, so the
    event loop's connection is never shared with this thread.
    """

    def __init__(self, log_path: Path, interval_s: float) -> None:
        self._log_path = log_path
        self._interval_s = interval_s
        self._written = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-fsync", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._written.set()

    def stop(self) -> None:
        self._stopping.set()
        self._written.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._written.wait()
            if self._stopping.wait(self._interval_s):
                return  # `close` checkpoints the log itself
            self._written.clear()
            self._fsync()

    def _fsync(self) -> None:
        try:
            fd = os.open(self._log_path, os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and removed: nothing left to flush
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _open_ledger(path: Path) -> tuple[sqlite3.Connection, tuple[int, int]]:
    """Open (or create) the ledger, take its exclusive lock and read (spent, answered)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=0.25)
    except (sqlite3.Error, OSError) as exc:
        raise BudgetError(f"cannot open the budget ledger {path}: {exc}") from None
    try:
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # `version` is no longer used; kept so ledgers of earlier releases and this one are alike.
        db.execute(
            "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY CHECK (id = 1),"
            " spent INTEGER NOT NULL, answered INTEGER NOT NULL, version INTEGER NOT NULL)"
        )
        # A write takes the exclusive lock now, not at the first reservation.
        db.execute("INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0)")
        row = db.execute("SELECT spent, answered FROM ledger WHERE id = 1").fetchone()
    except sqlite3.DatabaseError as exc:
        db.close()
        if "locked" in str(exc):
            raise BudgetError(
                f"budget ledger {path} is in use by another running process"
            ) from None
        raise BudgetError(f"cannot use the budget ledger {path}: {exc}") from None
    return db, row
