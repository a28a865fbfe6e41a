"""Budget tracker: stop training cleanly before a cloud bill reaches ``budget.max_budget``.

Cost = wall-clock hours of this run (plus the hours of earlier runs that it resumes) ×
``cost_per_hour``. Training stops when the spend plus the cost of one more step (the running mean)
would pass ``max_budget × (1 − safety_margin)``; the trainer then writes its checkpoint and records
``budget_stopped: true`` in its metrics. ``cost_per_hour = 0`` (the CPU demo) never stops.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from stfmamba.config import BudgetConfig


@dataclass
class BudgetTracker:
    """Tracks spend across resumes. Args: cfg (budget section), hours_before (hours of earlier runs)."""
    cfg: BudgetConfig
    hours_before: float = 0.0
    _start: float = field(default_factory=time.monotonic)
    _steps: int = 0

    @property
    def hours(self) -> float:
        return self.hours_before + (time.monotonic() - self._start) / 3600.0

    @property
    def spent(self) -> float:
        return self.hours * self.cfg.cost_per_hour

    @property
    def limit(self) -> float:
        return self.cfg.max_budget * (1.0 - self.cfg.safety_margin)

    def step(self) -> None:
        """Count one optimizer step (for the per-step cost estimate)."""
        self._steps += 1

    def should_stop(self) -> bool:
        """True when one more step (mean cost so far) would pass the limit."""
        if self.cfg.cost_per_hour <= 0:
            return False
        run_hours = time.monotonic() - self._start
        per_step = run_hours / 3600.0 * self.cfg.cost_per_hour / max(1, self._steps)
        return self.spent + per_step >= self.limit
