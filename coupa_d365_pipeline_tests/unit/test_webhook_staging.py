"""The staging directory shared by the receiver and the sensor, and one sensor tick's plan, as plain
Python: redelivery dedupe in every place an event can be, crash leftovers, retries under new run
keys, and the bounded work of a tick."""

import os
import stat
from datetime import UTC, datetime, timedelta

import pytest

from coupa_d365_pipeline.webhooks.dispatch import DispatchLimits, RunOutcome, plan_tick
from coupa_d365_pipeline.webhooks.staging import EventType, Place, StagedEvent, StageOutcome, WebhookStaging


def event(webhook_id: str, coupa_id: int = 7) -> StagedEvent:
    now = datetime.now(UTC)
    return StagedEvent(
        webhook_id=webhook_id,
        event_type=EventType.INVOICE_APPROVED,
        coupa_id=coupa_id,
        updated_at=now,
        event_timestamp=now,
        received_at=now,
    )


@pytest.fixture
def staging(tmp_path) -> WebhookStaging:
    return WebhookStaging(tmp_path / "staging").ensure()


def test_staged_file_is_private_complete_and_leaves_no_temporary(staging):
    assert staging.stage(event("msg_1")) is StageOutcome.STAGED
    [path] = list(staging.dir(Place.INCOMING).iterdir())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert StagedEvent.model_validate_json(path.read_bytes()).webhook_id == "msg_1"
    assert list(staging.dir(Place.TMP).iterdir()) == []
    assert stat.S_IMODE(staging.dir(Place.INCOMING).stat().st_mode) == 0o700


def test_a_redelivery_is_recognised_wherever_the_event_is(staging):
    staging.stage(event("msg_1"))
    assert staging.stage(event("msg_1")) is StageOutcome.DUPLICATE  # incoming
    state = staging.claim([e.key for e in staging.ready(10)])
    assert staging.stage(event("msg_1")) is StageOutcome.DUPLICATE  # in a batch
    staging.complete(state.batch_id)
    assert staging.stage(event("msg_1")) is StageOutcome.DUPLICATE  # processed
    staging.stage(event("msg_2"))
    state = staging.claim([e.key for e in staging.ready(10)])
    staging.fail(state.batch_id, "every attempt failed")
    assert staging.stage(event("msg_2")) is StageOutcome.DUPLICATE  # failed
    assert staging.count(Place.INCOMING) == 0 and staging.count(Place.PROCESSED) == 1
    assert [e.failure for e in staging.failed_events()] == ["every attempt failed"]


def test_a_batch_directory_left_without_its_state_file_gives_its_events_back(staging):
    staging.stage(event("msg_1"))
    [ready] = staging.ready(10)
    orphan = staging.dir(Place.BATCHES) / "0123456789abcdef"
    orphan.mkdir()
    os.replace(ready.path, orphan / ready.path.name)  # a crash after the move, before batch.json
    assert staging.batches() == []
    assert [e.key for e in staging.ready(10)] == [ready.key]


def test_a_claim_interrupted_midway_is_finished_by_claiming_the_same_events_again(staging):
    for n in range(3):
        staging.stage(event(f"msg_{n}", coupa_id=n + 1))
    keys = [e.key for e in staging.ready(10)]
    first = staging.claim(keys[:1])  # as if the tick died after moving one event
    assert staging.count(Place.INCOMING) == 2
    again = staging.claim(keys[1:])
    assert first.batch_id != again.batch_id
    assert sorted(e.coupa_id for e in staging.events(first.batch_id) + staging.events(again.batch_id)) == [1, 2, 3]


def test_a_tick_retries_a_failed_run_under_a_new_key_and_gives_up_after_the_limit(staging):
    staging.stage(event("msg_1"))
    outcomes: dict[str, RunOutcome] = {}

    def outcome_of(run_key: str) -> tuple[RunOutcome, str]:
        return outcomes.get(run_key, RunOutcome.NONE), f"run for {run_key}"

    limits = DispatchLimits(batch_size=10, max_batches_in_flight=2, max_attempts=2)
    first = plan_tick(staging, outcome_of, limits)
    [state] = first.launch
    assert first.new_events == 1 and state.run_key.endswith("-1")
    outcomes[state.run_key] = RunOutcome.IN_FLIGHT
    assert plan_tick(staging, outcome_of, limits).launch == []
    outcomes[state.run_key] = RunOutcome.FAILED
    second = plan_tick(staging, outcome_of, limits)
    [retry] = second.launch
    assert retry.run_key.endswith("-2") and retry.batch_id == state.batch_id
    assert retry.last_error == f"run for {state.run_key}"
    outcomes[retry.run_key] = RunOutcome.FAILED
    third = plan_tick(staging, outcome_of, limits)
    assert third.launch == [] and len(third.failed) == 1 and third.failed[0].events == 1
    assert "2 attempt(s) failed" in staging.failed_events()[0].failure


def test_a_tick_cuts_no_more_batches_than_the_in_flight_limit(staging):
    for n in range(25):
        staged = event(f"msg_{n}", coupa_id=n + 1)
        staging.stage(staged)
        arrived = 1_000_000 + n  # arrival order by mtime (a fast disk gives many the same timestamp)
        os.utime(staging.dir(Place.INCOMING) / f"{staged.key}.json", (arrived, arrived))
    limits = DispatchLimits(batch_size=10, max_batches_in_flight=2, max_attempts=3)
    plan = plan_tick(staging, lambda key: (RunOutcome.IN_FLIGHT, "running"), limits)
    assert [len(staging.events(s.batch_id)) for s in plan.launch] == [10, 10]
    assert staging.count(Place.INCOMING) == 5
    # oldest first: the events staged first are in the batches
    batched = sorted(e.coupa_id for s in plan.launch for e in staging.events(s.batch_id))
    assert batched == list(range(1, 21))
    succeeded = plan_tick(staging, lambda key: (RunOutcome.SUCCEEDED, "done"), limits)
    assert sum(succeeded.completed.values()) == 20 and len(succeeded.launch) == 1
    assert staging.count(Place.PROCESSED) == 20


def test_pruning_forgets_only_old_processed_events(staging):
    staging.stage(event("old"))
    staging.stage(event("new"))
    staging.complete(staging.claim([e.key for e in staging.ready(10)]).batch_id)
    old_path = staging.dir(Place.PROCESSED) / f"{event('old').key}.json"
    eight_days_ago = staging.filesystem_now() - 8 * 86400
    os.utime(old_path, (eight_days_ago, eight_days_ago))
    assert staging.prune_processed(timedelta(days=7)) == 1
    assert staging.stage(event("old")) is StageOutcome.STAGED
    assert staging.stage(event("new")) is StageOutcome.DUPLICATE
