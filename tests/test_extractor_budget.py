"""The budget is a hard ceiling: under 200 concurrent tasks, across restarts and after SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extractor.budget import _FILE_SIZE, _SLOT, _SLOT_OFFSETS, Budget, BudgetError, read_spent

REPO = Path(__file__).resolve().parents[1]


class FakeServer:
    """Counts what a black box would bill; the budget must never let this pass the limit."""

    def __init__(self) -> None:
        self.charged = 0
        self.answered = 0


async def client_task(budget: Budget, server: FakeServer, rng: random.Random) -> None:
    """Request until the budget is spent, with every outcome the policy must handle."""
    while (reserved := budget.reserve(1)) > 0:
        for _attempt in range(3):  # a retry keeps its reservation
            assert server.charged < budget.limit  # a unit is held before anything is sent
            await asyncio.sleep(rng.random() / 1000)
            outcome = rng.choice(["answer", "answer", "timeout", "429", "refused"])
            if outcome == "429":
                continue
            break
        if outcome in ("answer", "timeout"):
            server.charged += 1
        server.answered += outcome == "answer"
        charged = int(MAY_BE_CHARGED[outcome])
        budget.settle(reserved, int(outcome == "answer"), charged)
        assert server.charged <= budget.spent <= budget.limit


MAY_BE_CHARGED = {  # as the client reports it: a timeout after sending may have been billed
    "answer": True,
    "timeout": True,
    "429": False,
    "refused": False,  # connection refused: nothing was sent
}


def test_concurrent_tasks_never_pass_the_limit(tmp_path: Path) -> None:
    async def body() -> None:
        budget = Budget(150, tmp_path / "ledger.bin")
        server = FakeServer()
        rngs = [random.Random(seed) for seed in range(200)]
        await asyncio.gather(*(client_task(budget, server, rng) for rng in rngs))
        assert budget.spent == budget.limit == server.charged
        assert budget.answered == server.answered
        assert budget.remaining == 0 and budget.exhausted
        assert budget.reserve(5) == 0
        assert "spent 150 of 150" in budget.report()
        budget.close()

    asyncio.run(body())


def test_partial_grant_at_the_ceiling(tmp_path: Path) -> None:
    budget = Budget(10, tmp_path / "ledger.bin")
    assert budget.reserve(0) == 0
    assert budget.reserve(8) == 8
    assert budget.reserve(8) == 2  # a batch gets what is left
    budget.settle(8, answered=0, charged=0)  # a 4xx refusal: all given back
    assert budget.spent == 2 and budget.remaining == 8
    with pytest.raises(ValueError):
        budget.reserve(-1)
    budget.close()


def test_settle_checks_its_arguments(tmp_path: Path) -> None:
    budget = Budget(10, tmp_path / "ledger.bin")
    budget.reserve(3)
    with pytest.raises(ValueError):
        budget.settle(3, answered=2, charged=1)
    with pytest.raises(ValueError):
        budget.settle(4, answered=0, charged=0)  # more than is reserved
    budget.settle(3, answered=3, charged=3)
    with pytest.raises(ValueError):
        budget.settle(3, answered=0, charged=0)  # settling twice would refund twice
    assert budget.spent == 3
    budget.close()


def test_restart_counts_unsettled_reservations_as_spent(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.bin"

    budget = Budget(10, ledger)
    budget.reserve(4)
    budget.settle(4, answered=3, charged=4)
    budget.reserve(3)  # sent, then the process stops before the answers come back
    budget.close()

    budget = Budget(10, ledger)
    assert (budget.spent, budget.answered, budget.remaining) == (7, 3, 3)
    assert budget.reserve(5) == 3
    with pytest.raises(ValueError):
        budget.settle(6, answered=0, charged=0)  # the old run's units cannot be refunded
    budget.close()
    lowered = Budget(5, ledger)  # a smaller limit on restart: nothing left, never negative
    assert lowered.remaining == 0 and lowered.reserve(1) == 0
    lowered.close()


def test_one_live_run_per_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.bin"
    budget = Budget(10, ledger)
    with pytest.raises(BudgetError, match="in use"):
        Budget(10, ledger)
    budget.close()
    Budget(10, ledger).close()


def test_unusable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(BudgetError, match="cannot use"):
        Budget(10, tmp_path / "junk")


CHILD = """
import asyncio, os, sys
from extractor.budget import Budget

async def main(ledger, charges, limit):
    budget = Budget(limit, ledger)
    fd = os.open(charges, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    async def worker():
        while budget.reserve(1):
            os.write(fd, b"x")  # the server bills the request as it arrives
            await asyncio.sleep(0.002)
            budget.settle(1, 1, 1)

    await asyncio.gather(*(worker() for _ in range(20)))
    budget.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_sigkill_mid_run_never_passes_the_limit(tmp_path: Path) -> None:
    """Kill a paying process three times mid-run; restarts resume and the ceiling holds."""
    limit, ledger, charges = 300, tmp_path / "ledger.bin", tmp_path / "charges"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), str(ledger), str(charges), str(limit)]
    for kill_at in (30, 90, 150):
        child = subprocess.Popen(command, env=env)
        deadline = time.monotonic() + 20
        while _size(charges) < kill_at and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        assert child.poll() is None, "the child finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
        after = Budget(limit, ledger)
        assert _size(charges) <= after.spent <= limit  # every billed request was counted
        after.close()
    subprocess.run(command, env=env, check=True, timeout=30)
    final = Budget(limit, ledger)
    assert final.spent == limit and _size(charges) <= limit
    final.close()


SETTLE_THEN_DIE = """
import asyncio, os, signal, sys
from extractor.budget import Budget

async def main(ledger, then):
    budget = Budget(10, ledger)
    budget.reserve(4)
    budget.settle(4, answered=1, charged=2)  # 2 units given back
    if then == "in-flight":
        budget.reserve(3)  # sent, and the process dies before its answer
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.parametrize(
    ("then", "spent", "answered"),
    [
        ("die", 2, 1),  # the settlement reached the ledger before the kill
        ("in-flight", 5, 1),  # what was on the wire at the kill stays spent
    ],
)
def test_a_killed_run_leaves_what_was_charged_and_what_was_on_the_wire(
    tmp_path: Path, then: str, spent: int, answered: int
) -> None:
    """A reservation is on disk before its request leaves and a settlement as soon as it is
    made, so a kill leaves no more units spent than were charged or were still on the wire."""
    ledger, script = tmp_path / "ledger.bin", tmp_path / "child.py"
    script.write_text(SETTLE_THEN_DIE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), str(ledger), then]
    subprocess.run(command, env=env, timeout=30)
    after = Budget(10, ledger)
    assert (after.spent, after.answered) == (spent, answered)
    after.close()


def test_reconcile_gives_back_what_the_black_box_did_not_bill(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.bin"
    budget = Budget(10, ledger)
    budget.reserve(4)
    budget.settle(4, answered=2, charged=4)  # two charged without an answer (timeouts)
    budget.reserve(3)  # the run is killed with these on the wire
    budget.close()

    resumed = Budget(10, ledger)
    assert resumed.spent == 7
    assert resumed.reconcile(billed=5) == 2  # two of the seven never reached the bill
    assert (resumed.spent, resumed.answered, resumed.remaining) == (5, 2, 5)
    assert resumed.reconcile(billed=9) == 0  # a higher bill (another client?) takes nothing
    assert resumed.reconcile(billed=0) == 3  # never below the answers received
    assert resumed.spent == 2
    resumed.close()
    again = Budget(10, ledger)  # what was given back is on disk
    assert (again.spent, again.answered) == (2, 2)
    again.reserve(1)
    with pytest.raises(ValueError, match="in flight"):
        again.reconcile(billed=0)
    again.close()


def test_the_ledger_is_fsynced_soon_after_a_reservation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a machine crash: the ledger file reaches the disk within the sync interval, from
    the background thread (never inline in `reserve`), and `close` fsyncs it too."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr("extractor.budget.os.fsync", recording_fsync)
    ledger = tmp_path / "ledger.bin"
    budget = Budget(5, ledger, sync_interval_s=0.5)
    assert str(ledger) in synced  # a new ledger is durable before its first use
    synced.clear()
    started = time.monotonic()
    budget.reserve(1)
    assert synced == []  # the reservation did not wait for the disk
    while str(ledger) not in synced and time.monotonic() < started + 5:
        time.sleep(0.01)
    assert str(ledger) in synced
    assert time.monotonic() - started < 2.5
    budget.settle(1, 1, 1)
    synced.clear()
    budget.close()
    assert str(ledger) in synced


def _slots(ledger: Path) -> dict[int, tuple[int, ...]]:
    """The ledger's two slots by file offset: (sequence, spent, answered, crc)."""
    data = ledger.read_bytes()
    return {offset: _SLOT.unpack_from(data, offset) for offset in _SLOT_OFFSETS}


def _damage(ledger: Path, offset: int) -> None:
    """Overwrite a slot's spent and answered, as a write torn by a power loss might."""
    data = bytearray(ledger.read_bytes())
    data[offset + 8 : offset + 24] = b"\xff" * 16
    ledger.write_bytes(data)


def test_a_torn_newest_record_falls_back_to_the_older_one(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.bin"
    budget = Budget(10, ledger)
    budget.reserve(2)
    budget.reserve(3)
    budget.close()
    slots = _slots(ledger)
    assert sorted(spent for _seq, spent, _answered, _crc in slots.values()) == [2, 5]
    newest = max(slots, key=lambda offset: slots[offset][0])
    _damage(ledger, newest)

    budget = Budget(10, ledger)
    assert (budget.spent, budget.answered) == (2, 0)  # the older slot's state
    assert budget.reserve(8) == 8  # written into the torn slot: the good one is kept
    budget.close()
    reopened = Budget(10, ledger)
    assert reopened.spent == 10
    reopened.close()

    for offset in _SLOT_OFFSETS:
        _damage(ledger, offset)
    with pytest.raises(BudgetError, match="cannot use"):
        Budget(10, ledger)


def test_foreign_and_unfinished_files(tmp_path: Path) -> None:
    """A file of the right size without the header is refused; an all-zero file (a creation cut
    short by a power loss) is a new ledger."""
    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"x" * _FILE_SIZE)
    with pytest.raises(BudgetError, match="cannot use"):
        Budget(10, foreign)
    unfinished = tmp_path / "unfinished.bin"
    unfinished.write_bytes(bytes(_FILE_SIZE))
    budget = Budget(10, unfinished)
    assert budget.spent == 0 and budget.reserve(4) == 4
    budget.close()
    reopened = Budget(10, unfinished)
    assert reopened.spent == 4
    reopened.close()


OLD_RELEASE = """
import os, signal, sqlite3, sys

db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute(
    "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " spent INTEGER NOT NULL, answered INTEGER NOT NULL, version INTEGER NOT NULL)"
)
db.execute("INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0)")
db.execute("UPDATE ledger SET spent = ?, answered = ? WHERE id = 1", (7, 3))
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)  # the update is left in the write-ahead log
db.close()
"""


@pytest.mark.parametrize("then", ["close", "die"])
def test_an_earlier_sqlite_ledger_is_imported_once(tmp_path: Path, then: str) -> None:
    """A run resumed across the upgrade keeps the old ledger's spent units."""
    legacy, ledger, script = (
        tmp_path / "budget.sqlite3",
        tmp_path / "budget.ledger",
        tmp_path / "old.py",
    )
    script.write_text(OLD_RELEASE)
    subprocess.run([sys.executable, str(script), str(legacy), then], timeout=30)
    assert then == "close" or Path(f"{legacy}-wal").exists()

    budget = Budget(10, ledger)
    assert (budget.spent, budget.answered, budget.remaining) == (7, 3, 3)
    assert budget.reserve(5) == 3
    budget.close()
    with sqlite3.connect(legacy) as db:  # later changes to the old file are not read again
        db.execute("UPDATE ledger SET spent = 0, answered = 0 WHERE id = 1")
    db.close()
    reopened = Budget(10, ledger)
    assert (reopened.spent, reopened.answered) == (10, 3)
    reopened.close()


def test_an_earlier_ledger_in_use_is_not_imported(tmp_path: Path) -> None:
    """A live run of an earlier release holds its SQLite ledger: refuse, import nothing."""
    legacy, ledger = tmp_path / "budget.sqlite3", tmp_path / "budget.ledger"
    old = sqlite3.connect(legacy, isolation_level=None)
    old.execute("PRAGMA locking_mode=EXCLUSIVE")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, spent, answered, version)")
    old.execute("INSERT INTO ledger VALUES (1, 4, 1, 0)")
    with pytest.raises(BudgetError, match="in use"):
        Budget(10, ledger)
    old.close()
    budget = Budget(10, ledger)
    assert (budget.spent, budget.answered) == (4, 1)
    budget.close()


def test_the_spend_can_be_read_while_a_run_holds_the_ledger(tmp_path: Path) -> None:
    """The worker reports probing's paid answers from outside the run that holds the lock."""
    ledger = tmp_path / "budget.ledger"
    assert read_spent(ledger) is None  # no run has started yet
    with_budget = Budget(10, ledger)
    try:
        assert with_budget.reserve(4) == 4 and read_spent(ledger) == 4
        with_budget.settle(4, answered=3, charged=4)
        assert with_budget.reserve(2) == 2 and read_spent(ledger) == 6
    finally:
        with_budget.close()
    assert read_spent(ledger) == 6
