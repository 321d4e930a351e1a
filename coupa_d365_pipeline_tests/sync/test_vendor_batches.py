"""Vendors a bulk run needs are created many per ``$batch`` (one changeset each) instead of one POST
each: every part's status is read, a refused vendor fails alone with D365's reason, and a batch whose
answer was lost is settled by looking each vendor up by key — never a second vendor."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from coupa_d365_pipeline.mapping.vendors import map_vendor, vendor_changes
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.sync.context import SyncServices
from coupa_d365_pipeline.sync.report import Action
from coupa_d365_pipeline.sync.vendors import VendorSync
from coupa_d365_pipeline_tests.flow.helpers import CHARTS
from coupa_d365_pipeline_tests.sync.conftest import as_run
from coupa_d365_pipeline_tests.sync.test_dmf_route import approved_invoices, last_seq

BATCH = r"^/data/\$batch$"


def wanted_vendors(services: SyncServices, sandboxes) -> list[tuple[dict[str, Any], str]]:
    """(supplier, legal entity) of every approved invoice whose vendor maps — what a bulk run ensures."""
    pairs: dict[tuple[int, str], tuple[dict[str, Any], str]] = {}
    for invoice in approved_invoices(sandboxes):
        le = CHARTS.get(invoice["account-type"]["name"])
        supplier = services.supplier(invoice["supplier"]["id"])
        if (
            le is not None
            and supplier is not None
            and isinstance(map_vendor(supplier, le, services.mapping, services.master), dict)
        ):
            pairs[(int(supplier["id"]), le)] = (supplier, le)
    return list(pairs.values())


def vendor_accounts(sandboxes) -> Counter[tuple[str, str]]:
    return Counter(
        (v["dataAreaId"].lower(), v["VendorAccountNumber"].lower()) for v in sandboxes.d365.state.records("VendorsV2")
    )


def account_of(services: SyncServices, supplier: dict[str, Any], le: str) -> tuple[str, str]:
    desired = map_vendor(supplier, le, services.mapping, services.master)
    assert isinstance(desired, dict)
    return le.lower(), str(desired["VendorAccountNumber"]).lower()


def d365_writes(sandboxes, since: int) -> Counter[str]:
    return Counter(
        f"{e.method} {e.path.rsplit('/', 1)[-1]}"
        for e in sandboxes.d365.log.snapshot()
        if e.seq > since and e.method != "GET"
    )


def test_missing_vendors_are_created_and_changed_ones_updated_twenty_per_batch_each_once_and_a_rerun_writes_nothing(
    services, sandboxes
):
    wanted = wanted_vendors(services, sandboxes)
    before = vendor_accounts(sandboxes)
    missing = {account_of(services, s, le) for s, le in wanted} - set(before)
    assert len(missing) > 20  # more than one batch
    seq = last_seq(sandboxes)

    outcomes = VendorSync(services).ensure_many(wanted)

    created = [o for o in outcomes if o.action == Action.CREATED]
    assert len(created) == len(missing)
    assert {o.action for o in outcomes} <= {Action.CREATED, Action.ALREADY_PRESENT, Action.UPDATED}
    updated = [o for o in outcomes if o.action == Action.UPDATED]  # seeded vendors whose fields differ
    assert updated and all(o.detail.startswith("changed: ") for o in updated)
    # creates and updates (PATCH changesets) share the batches: no request of their own
    assert d365_writes(sandboxes, seq) == Counter({"POST $batch": math.ceil((len(missing) + len(updated)) / 20)})
    for o in updated:
        le, acct = account_of(services, services.supplier(o.coupa_id), o.legal_entity)
        desired = map_vendor(services.supplier(o.coupa_id), le, services.mapping, services.master)
        current = sandboxes.d365.state.get("VendorsV2", {"dataAreaId": le, "VendorAccountNumber": acct.upper()})
        assert current is not None and not vendor_changes(current, desired), (o, current)
    after = vendor_accounts(sandboxes)
    assert all(after[a] == 1 for a in missing) and set(after) - set(before) == missing
    for supplier, le in wanted:
        row = services.ledger.get("vendor", supplier["id"], scope=le)
        assert (row.state, row.problem, row.claimed_by) == ("written", None, None)
    audited = [
        h
        for supplier, le in wanted
        for h in services.ledger.history("vendor", supplier["id"])
        if h["action"] == "create"
    ]
    assert len(audited) == len(missing) and {h["http_status"] for h in audited} == {201}
    patches = [h for s, _ in wanted for h in services.ledger.history("vendor", s["id"]) if h["action"] == "update"]
    assert len(patches) == len(updated) and {h["http_status"] for h in patches} == {204}

    seq = last_seq(sandboxes)
    again = VendorSync(as_run(services, "run-2")).ensure_many(wanted)
    assert Counter(o.action for o in again) == Counter({Action.ALREADY_PRESENT: len(wanted)})
    assert d365_writes(sandboxes, seq) == Counter()


def test_a_refused_vendor_fails_alone_with_d365s_reason(services, sandboxes):
    wanted = wanted_vendors(services, sandboxes)
    # D365 loses one vendor group behind the connector's back (the master data it read still has it):
    # D365 refuses exactly the vendors of that group in that legal entity
    desired = {(int(s["id"]), le): map_vendor(s, le, services.mapping, services.master) for s, le in wanted}
    groups = Counter((le, d["VendorGroupId"]) for (_, le), d in desired.items() if isinstance(d, dict))
    (le_gone, group_gone), _ = min(groups.items(), key=lambda kv: kv[1])
    sandboxes.d365.state.delete("VendorGroups", {"dataAreaId": le_gone, "VendorGroupId": group_gone})
    refused = {pair for pair, d in desired.items() if pair[1] == le_gone and d["VendorGroupId"] == group_gone}

    outcomes = VendorSync(services).ensure_many(wanted)

    failed = {(o.coupa_id, o.legal_entity) for o in outcomes if o.action == Action.FAILED}
    assert failed == refused
    for supplier_id, le in refused:
        row = services.ledger.get("vendor", supplier_id, scope=le)
        assert row.state == "failed" and "Vendor groups" in row.reason and row.claimed_by is None, row.reason
    created = [o for o in outcomes if o.action == Action.CREATED]
    assert created and all(n == 1 for n in vendor_accounts(sandboxes).values())


@pytest.mark.parametrize("kind", ["drop_after", "drop_before"])
def test_a_lost_batch_answer_is_settled_by_lookup_never_a_second_vendor(services, sandboxes, kind):
    wanted = wanted_vendors(services, sandboxes)
    missing = {account_of(services, s, le) for s, le in wanted} - set(vendor_accounts(sandboxes))
    sandboxes.d365.injector.script(ScriptedFault(kind=kind, method="POST", path_regex=BATCH, after=0))

    outcomes = VendorSync(services).ensure_many(wanted)

    assert [e for e in sandboxes.d365.log.snapshot() if e.injected == kind]  # the fault fired
    assert Counter(o.action for o in outcomes)[Action.FAILED] == 0
    after = vendor_accounts(sandboxes)
    assert all(after[a] == 1 for a in missing)
    for supplier, le in wanted:
        row = services.ledger.get("vendor", supplier["id"], scope=le)
        assert (row.state, row.problem, row.claimed_by) == ("written", None, None)
