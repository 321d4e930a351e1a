"""One sensor tick over the staging directory, as plain Python: settle the batches whose runs have
finished, re-drive failed ones under a new run key (bounded), and cut new batches from incoming
events within the in-flight limit. The sensor (``defs/webhooks.py``) turns the plan into run requests.

Why files move only once a run's outcome is known: Dagster never launches a ``run_key`` twice, not
even when its run failed, so the staging directory — not the run history — must remember what still
needs a run; a batch leaves ``batches/`` only for ``processed/`` (run succeeded) or ``failed/``
(every attempt failed). A tick that crashes halfway leaves batches that the next tick asks for again
under the same key, which Dagster launches at most once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from ..settings import (
    DEFAULT_WEBHOOK_BATCH_SIZE,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS,
    DEFAULT_WEBHOOK_MAX_BATCHES_IN_FLIGHT,
)
from .staging import BatchState, WebhookStaging


class RunOutcome(StrEnum):
    NONE = "none"  # no run carries the key (yet): ask for it (again)
    IN_FLIGHT = "in_flight"  # queued, starting, running, cancelling
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed or cancelled


@dataclass(frozen=True)
class DispatchLimits:
    batch_size: int = DEFAULT_WEBHOOK_BATCH_SIZE
    max_batches_in_flight: int = DEFAULT_WEBHOOK_MAX_BATCHES_IN_FLIGHT
    max_attempts: int = DEFAULT_WEBHOOK_MAX_ATTEMPTS


@dataclass(frozen=True)
class FailedBatch:
    state: BatchState
    events: int
    reason: str


@dataclass
class TickPlan:
    launch: list[BatchState] = field(default_factory=list)  # new batches, retries, and re-asks
    in_flight: list[BatchState] = field(default_factory=list)
    completed: dict[str, int] = field(default_factory=dict)  # batch id -> events moved to processed/
    retried: list[BatchState] = field(default_factory=list)
    failed: list[FailedBatch] = field(default_factory=list)
    new_events: int = 0
    duration_s: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.launch or self.completed or self.failed)

    def summary(self) -> str:
        parts = [
            f"{len(self.launch)} run(s) requested ({self.new_events} new event(s), {len(self.retried)} retried)",
            f"{len(self.in_flight)} in flight",
        ]
        if self.completed:
            parts.append(f"{sum(self.completed.values())} event(s) done")
        if self.failed:
            parts.append(f"{sum(f.events for f in self.failed)} event(s) failed for good")
        return "; ".join(parts)


def plan_tick(
    staging: WebhookStaging,
    outcome_of: Callable[[str], tuple[RunOutcome, str]],
    limits: DispatchLimits = DispatchLimits(),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> TickPlan:
    """``outcome_of(run_key)`` -> (outcome, a one-line description of the run, e.g. its id and status)."""
    started = time.monotonic()
    plan = TickPlan()
    for state in staging.batches():
        outcome, described = outcome_of(state.run_key)
        if outcome is RunOutcome.NONE:
            plan.launch.append(state)  # never launched, or the tick that cut it crashed: same key again
            plan.in_flight.append(state)
        elif outcome is RunOutcome.IN_FLIGHT:
            plan.in_flight.append(state)
        elif outcome is RunOutcome.SUCCEEDED:
            plan.completed[state.batch_id] = staging.complete(state.batch_id)
        elif state.attempt < limits.max_attempts:
            retry = staging.retry(state, described)
            plan.retried.append(retry)
            plan.launch.append(retry)
            plan.in_flight.append(retry)
        else:
            reason = f"{state.attempt} attempt(s) failed; last: {described}"
            plan.failed.append(FailedBatch(state, staging.fail(state.batch_id, reason), reason))
    room = max(0, limits.max_batches_in_flight - len(plan.in_flight))
    if room:
        ready = staging.ready(limit=room * limits.batch_size)
        for start in range(0, len(ready), limits.batch_size):
            chunk = ready[start : start + limits.batch_size]
            state = staging.claim([e.key for e in chunk], now=now())
            plan.launch.append(state)
            plan.in_flight.append(state)
            plan.new_events += len(chunk)
    plan.duration_s = round(time.monotonic() - started, 3)
    return plan
