"""Per-epoch bookkeeping shared by every training loop: history, progress, early stopping."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

log = logging.getLogger("fmrec.model")


class EpochTracker:
    """Records each epoch's entry, logs it, and keeps the best validation snapshot.

    ``minimize``: lower metric is better (RMSE, log loss) or higher (NDCG@10).
    :meth:`record` returns True when early stopping should end training;
    :meth:`finish` puts the best snapshot back (via ``restore``) and sets ``best_epoch_``.
    """

    def __init__(self, model: Any, n_epochs: int, minimize: bool = True) -> None:
        self.model = model
        self.n_epochs = n_epochs
        self.minimize = minimize
        self.best_metric = math.inf if minimize else -math.inf
        self.best_epoch = -1
        self.best_snapshot: Any = None
        self.bad_epochs = 0
        model.history_ = []

    def record(self, entry: dict[str, float], metric: float | None = None,
               snapshot: Callable[[], Any] | None = None) -> bool:
        model = self.model
        epoch = int(entry["epoch"])
        if metric is not None:
            better = metric < self.best_metric - 1e-6 if self.minimize else metric > self.best_metric + 1e-6
            if better:
                self.best_metric, self.best_epoch = metric, epoch
                self.best_snapshot = snapshot() if snapshot is not None else None
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
        model.history_.append(entry)
        if model.verbose:
            log.info("epoch %d/%d  %s", epoch, self.n_epochs,
                     "  ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch"))
        stop = metric is not None and model.early_stopping and self.bad_epochs >= model.patience
        if stop and model.verbose:
            log.info("early stopping: no improvement for %d epochs", model.patience)
        return stop

    def finish(self, restore: Callable[[Any], None], last: Any) -> None:
        """Restore the best validated snapshot (with early stopping) or keep ``last``."""
        if self.model.early_stopping and self.best_snapshot is not None:
            restore(self.best_snapshot)
            self.model.best_epoch_ = self.best_epoch
        else:
            restore(last)
            self.model.best_epoch_ = len(self.model.history_)
