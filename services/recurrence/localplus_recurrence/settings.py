"""Settings of the recurrence service, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RecurrenceSettings:
    # How far ahead occurrences exist, and the most one series keeps at once.
    horizon: timedelta = timedelta(days=365)
    max_per_series: int = 1000
    # How often the horizon job looks for stale or short series.
    job_every: timedelta = timedelta(seconds=60)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RecurrenceSettings:
        return cls(
            horizon=timedelta(days=int(env.get("RECURRENCE_HORIZON_DAYS") or 365)),
            max_per_series=int(env.get("RECURRENCE_MAX_PER_SERIES") or 1000),
            job_every=timedelta(seconds=float(env.get("RECURRENCE_JOB_SECONDS") or 60)),
        )
