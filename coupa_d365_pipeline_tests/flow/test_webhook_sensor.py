"""coupa_webhook_sensor + coupa_webhook_job against the sandboxes, with a real (temporary) Dagster
instance: the sensor batches staged events, each run books exactly the documents they name, run keys
never repeat for a retry, failed batches end in failed/ and in the check, and a poll overlapping the
event-driven runs books nothing twice."""

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from coupa_d365_pipeline.defs.resources import WebhookStagingResource
from coupa_d365_pipeline.defs.webhooks import CHECK_NAME, EVENTS_KEY, coupa_webhook_sensor, delivery_check_result
from coupa_d365_pipeline.webhooks.staging import EventType, Place, StagedEvent, StageOutcome, WebhookStaging
from coupa_d365_pipeline_tests.flow.conftest import ledger
from coupa_d365_pipeline_tests.flow.helpers import d365_invoices, d365_writes, last_seq, run_documents, run_master

SENSOR = "coupa_webhook_sensor"


@pytest.fixture
def staging(tmp_path, monkeypatch) -> WebhookStaging:
    monkeypatch.setenv("WEBHOOK_STAGING_DIR", str(tmp_path / "webhooks"))
    return WebhookStaging(tmp_path / "webhooks").ensure()


def event(kind: EventType, coupa_id: int, webhook_id: str, updated_at: datetime | None = None) -> StagedEvent:
    now = datetime.now(UTC)
    return StagedEvent(
        webhook_id=webhook_id,
        event_type=kind,
        coupa_id=coupa_id,
        updated_at=updated_at or now,
        event_timestamp=now,
        received_at=now,
    )


def sensor_context(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance, sensor_name=SENSOR, cursor=cursor, resources={"webhook_staging": WebhookStagingResource()}
    )


def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    result = coupa_webhook_sensor(sensor_context(instance, cursor))
    assert isinstance(result, dg.SensorResult), result
    return result


def launch(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """What the daemon does with a run request: a run tagged with its run_key and the sensor's name."""
    from coupa_d365_pipeline.definitions import defs

    return defs.resolve_job_def("coupa_webhook_job").execute_in_process(
        instance=instance,
        run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key or "", "dagster/sensor_name": SENSOR},
        raise_on_error=False,
    )


def unsynced_approved_invoices(sandboxes, count: int) -> list[dict]:
    return [i for i in sandboxes.coupa.state.records("invoices") if i["status"] == "approved"][:count]


def test_events_become_one_run_that_books_exactly_those_invoices(sandbox_env, sandboxes, instance, staging):
    assert run_master(instance).success
    chosen = unsynced_approved_invoices(sandboxes, 3)
    for n, invoice in enumerate(chosen):
        assert staging.stage(event(EventType.INVOICE_APPROVED, invoice["id"], f"msg_{n}")) is StageOutcome.STAGED
    # a redelivery and a second event for the same invoice: one document, synced once
    assert staging.stage(event(EventType.INVOICE_APPROVED, chosen[0]["id"], "msg_0")) is StageOutcome.DUPLICATE
    staging.stage(event(EventType.INVOICE_UPDATED, chosen[0]["id"], "msg_again"))

    first = tick(instance)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.run_key and request.run_key.startswith("coupa-webhooks-") and request.run_key.endswith("-1")
    assert staging.count(Place.INCOMING) == 0 and staging.count(Place.BATCHES) == 1
    # re-evaluating before the run exists asks for the same key (the daemon launches it once)
    assert [r.run_key for r in tick(instance).run_requests] == [request.run_key]

    result = launch(instance, request)
    assert result.success
    headers = d365_invoices(sandboxes)
    booked_numbers = {number for (_, _, number) in headers}
    assert booked_numbers == {i["invoice-number"] for i in chosen}
    assert all(len(found) == 1 for found in headers.values())
    rows = ledger(sandbox_env).rows("invoice", ["written"])
    assert sorted(r.coupa_id for r in rows) == sorted(i["id"] for i in chosen)

    materialization = result.asset_materializations_for_node("webhooks__coupa_events")[0]
    assert materialization.metadata["events"].value == 4
    assert materialization.metadata["outcomes"].value == {"created": 4}
    observations = [
        e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert [o.asset_key for o in observations] == [dg.AssetKey(["d365", "vendor_invoices"])]
    assert sorted(observations[0].metadata["coupa_ids"].value) == sorted(i["id"] for i in chosen)

    # the next tick sees the run succeeded: the events are processed, nothing is launched again
    after = tick(instance)
    assert after.run_requests == [] and staging.count(Place.PROCESSED) == 4 and staging.count(Place.BATCHES) == 0
    assert staging.stage(event(EventType.INVOICE_APPROVED, chosen[1]["id"], "msg_1")) is StageOutcome.DUPLICATE


def test_stale_and_repeated_events_and_an_overlapping_poll_book_nothing_twice(
    sandbox_env, sandboxes, instance, staging
):
    assert run_master(instance).success
    chosen = unsynced_approved_invoices(sandboxes, 2)
    for n, invoice in enumerate(chosen):
        staging.stage(event(EventType.INVOICE_APPROVED, invoice["id"], f"first_{n}"))
    assert launch(instance, tick(instance).run_requests[0]).success
    tick(instance)  # settles the batch
    before = last_seq(sandboxes)
    # a stale event (older updated_at than what was synced) and a poll of the invoice's partition
    stale = datetime.now(UTC) - timedelta(days=30)
    staging.stage(event(EventType.INVOICE_UPDATED, chosen[0]["id"], "stale", updated_at=stale))
    request = tick(instance).run_requests[0]
    day = str(chosen[0]["updated-at"])[:10]  # the poll of the partition that holds the invoice
    assert run_documents(instance, first=day, last=day).success
    assert launch(instance, request).success
    number = f'"{chosen[0]["invoice-number"]}"'
    assert not [w for w in d365_writes(sandboxes, before) if number in (w.body or "")], "the booked invoice was written"
    headers = d365_invoices(sandboxes)
    assert all(len(found) == 1 for found in headers.values()), "an invoice was booked twice"
    for invoice in chosen:
        assert any(number == invoice["invoice-number"] for (_, _, number) in headers)


def test_a_failed_batch_is_retried_under_new_keys_then_reported_failed(sandbox_env, instance, staging, monkeypatch):
    staging.stage(event(EventType.INVOICE_APPROVED, 999_001, "doomed"))
    monkeypatch.setenv("COUPA_D365_MAPPING_FILE", "/nonexistent/mapping.yaml")  # every run fails at start
    keys = []
    request = tick(instance).run_requests[0]
    for attempt in (1, 2, 3):
        assert request.run_key and request.run_key.endswith(f"-{attempt}")
        keys.append(request.run_key)
        assert not launch(instance, request).success
        result = tick(instance)
        if attempt < 3:
            assert len(result.run_requests) == 1
            request = result.run_requests[0]
    assert len(set(keys)) == 3
    assert result.run_requests == []
    assert staging.count(Place.FAILED) == 1 and staging.count(Place.BATCHES) == 0
    evaluations = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert len(evaluations) == 1 and not evaluations[0].passed
    assert evaluations[0].asset_key == EVENTS_KEY and evaluations[0].check_name == CHECK_NAME
    check = delivery_check_result(staging)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "999001" in check.metadata["failed_events"].value and "3 attempt(s) failed" in str(
        check.metadata["failed_events"].value
    )
    # the operator fixes the cause and gives the events another round
    assert staging.requeue_failed() == 1 and staging.count(Place.INCOMING) == 1
    assert delivery_check_result(staging).passed


def test_a_tick_over_ten_thousand_staged_events_stays_far_under_the_sensor_timeout(instance, staging):
    now = datetime.now(UTC)
    incoming = staging.dir(Place.INCOMING)
    for n in range(10_000):  # written directly: the receiver's fsyncs are not what this measures
        staged = event(EventType.INVOICE_APPROVED, n + 1, f"bulk_{n}").model_copy(update={"received_at": now})
        (incoming / f"{staged.key}.json").write_text(staged.model_dump_json())
    started = time.monotonic()
    result = tick(instance)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"a tick over 10,000 staged events took {elapsed:.1f} s"
    assert len(result.run_requests) == 2  # DEFAULT_WEBHOOK_MAX_BATCHES_IN_FLIGHT, each of 100 events
    assert staging.count(Place.INCOMING) == 10_000 - 200
    # until those runs exist, a tick asks for the same two keys again and cuts no new batch
    again = tick(instance)
    assert {r.run_key for r in again.run_requests} == {r.run_key for r in result.run_requests}
    assert staging.count(Place.INCOMING) == 10_000 - 200


def test_sensor_skips_cheaply_without_a_staging_directory(instance, tmp_path, monkeypatch):
    monkeypatch.setenv("WEBHOOK_STAGING_DIR", str(tmp_path / "absent"))
    result = coupa_webhook_sensor(sensor_context(instance))
    assert isinstance(result, dg.SkipReason) and "no staging directory" in (result.skip_message or "")
    assert not (tmp_path / "absent").exists()


def test_supplier_and_purchase_order_events_go_first_and_unknown_or_unapproved_ones_write_nothing(
    sandbox_env, sandboxes, instance, staging
):
    assert run_master(instance).success
    # a supplier announced before any document uses it gets its vendor with its first document
    [invoice] = unsynced_approved_invoices(sandboxes, 1)
    staging.stage(event(EventType.SUPPLIER_UPDATED, invoice["supplier"]["id"], "too early"))
    staging.stage(event(EventType.INVOICE_APPROVED, invoice["id"], "first invoice"))
    first = launch(instance, tick(instance).run_requests[0])
    assert first.success
    outcomes = first.asset_materializations_for_node("webhooks__coupa_events")[0].metadata["outcomes"].value
    assert outcomes == {"created": 1, "no_vendor_yet": 1}
    tick(instance)
    [vendor_row] = ledger(sandbox_env).rows("vendor", ["written"])
    supplier = sandboxes.coupa.state.touch("suppliers", vendor_row.coupa_id, name="Renamed By Webhook Ltd")
    po = next(p for p in sandboxes.coupa.state.records("purchase_orders") if p["status"] == "issued")
    unapproved = next(i for i in sandboxes.coupa.state.records("invoices") if i["status"] == "pending_approval")
    staging.stage(event(EventType.INVOICE_UPDATED, unapproved["id"], "unapproved"))
    staging.stage(event(EventType.INVOICE_APPROVED, 987_654_321, "unknown"))
    staging.stage(event(EventType.PURCHASE_ORDER_ISSUED, po["id"], "po"))
    staging.stage(event(EventType.SUPPLIER_UPDATED, supplier["id"], "supplier"))

    result = launch(instance, tick(instance).run_requests[0])
    assert result.success
    table = result.asset_materializations_for_node("webhooks__coupa_events")[0].metadata["events_table"].value
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "updated" in rows["supplier.updated"]
    assert "created" in rows["purchase_order.issued"]
    assert "not_in_coupa" in rows["invoice.approved"]
    assert "status_not_synced" in rows["invoice.updated"] and "pending_approval" in rows["invoice.updated"]
    vendor = next(
        v
        for v in sandboxes.d365.state.records("VendorsV2")
        if v["dataAreaId"] == vendor_row.scope
        and v["VendorAccountNumber"] == vendor_row.d365_key["VendorAccountNumber"]
    )
    assert vendor["VendorOrganizationName"] == "Renamed By Webhook Ltd"
    assert any(
        h["PurchaseOrderNumber"] == po["po-number"] for h in sandboxes.d365.state.records("PurchaseOrderHeadersV2")
    )
    # neither the unknown nor the unapproved invoice was written: only the first batch's invoice is there
    assert [number for (_, _, number) in d365_invoices(sandboxes)] == [invoice["invoice-number"]]
    # the order of the table is the sync order: suppliers, then purchase orders, then invoices
    order = [
        line.split("|")[1].strip().split(".")[0]
        for line in table.splitlines()
        if line.startswith("| ") and "." in line.split("|")[1]
    ]
    assert order == sorted(order, key=["supplier", "purchase_order", "invoice"].index)


def test_the_check_warns_when_events_wait_longer_than_fifteen_minutes(staging):
    assert delivery_check_result(staging).passed
    staged = event(EventType.INVOICE_APPROVED, 5, "waiting")
    staging.stage(staged)
    assert delivery_check_result(staging).passed
    twenty_minutes_ago = staging.filesystem_now() - 20 * 60
    os.utime(staging.dir(Place.INCOMING) / f"{staged.key}.json", (twenty_minutes_ago, twenty_minutes_ago))
    check = delivery_check_result(staging)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "1 event(s) waiting, the oldest for 20 min" in (check.description or "")
