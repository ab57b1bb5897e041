"""The progress line of a trainer that stops early (teacher and student alike).

A bar to `max_epochs` lies: early stopping usually ends the run long before the cap (the
ML-100k teacher stopped near epoch 46 of 200, under a bar whose ETA said over an hour). So the
line shows what decides the end instead: the epoch, the best one so far, and how many epochs
without a better one are left before patience runs out; the cap is named, never counted down.
"""

from __future__ import annotations

from tqdm import tqdm


def epoch_status(epoch: int, best_epoch: int, patience: int, max_epochs: int) -> str:
    """E.g. `epoch 12 (best 9, stops in 7 without a better one; cap 200)`."""
    if epoch == 0:
        return f"epoch 0 (patience {patience}; cap {max_epochs})"
    patience_left = patience - (epoch - best_epoch)
    cap_left = max_epochs - epoch
    if patience_left <= 0:
        return f"epoch {epoch} (best {best_epoch}; stops: {patience} without a better one)"
    if cap_left <= 0:
        return f"epoch {epoch} (best {best_epoch}; stops: cap {max_epochs} reached)"
    if cap_left < patience_left:
        return f"epoch {epoch} (best {best_epoch}; cap {max_epochs}, {cap_left} left)"
    return (
        f"epoch {epoch} (best {best_epoch}, stops in {patience_left} without a better one; "
        f"cap {max_epochs})"
    )


class EpochBar:
    """One tqdm line showing `epoch_status` and the epoch's metrics, with elapsed time only."""

    def __init__(
        self,
        name: str,
        patience: int,
        max_epochs: int,
        enabled: bool = True,
        epoch: int = 0,
        best_epoch: int = 0,
    ) -> None:
        self.name, self.patience, self.max_epochs = name, patience, max_epochs
        first = self._text(epoch, best_epoch, {})
        self._bar = tqdm(desc=first, bar_format="{desc} [{elapsed}]", disable=not enabled)

    def update(self, epoch: int, best_epoch: int, **metrics: str) -> None:
        """Show the state after `epoch` (0: none run yet) and its metrics (`name=text`)."""
        self._bar.set_description_str(self._text(epoch, best_epoch, metrics), refresh=True)

    def _text(self, epoch: int, best_epoch: int, metrics: dict[str, str]) -> str:
        status = epoch_status(epoch, best_epoch, self.patience, self.max_epochs)
        return f"{self.name}: {status}" + "".join(f"  {k} {v}" for k, v in metrics.items())

    def close(self) -> None:
        self._bar.close()
