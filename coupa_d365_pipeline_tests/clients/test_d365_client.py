"""D365Client against the D365 sandbox over real HTTP."""

import json
import math
import re
from urllib.parse import parse_qs, unquote

import httpx
import pytest

from coupa_d365_pipeline.d365 import odata
from coupa_d365_pipeline.d365.auth import EntraAuthError
from coupa_d365_pipeline.d365.batch import BatchOperation, Changeset
from coupa_d365_pipeline.d365.client import D365Client, D365Error
from coupa_d365_pipeline.d365.schema import entity_set
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock
from coupa_d365_pipeline_tests.conftest import make_d365_client


def existing_vendor(sandboxes, legal_entity="usmf"):
    return next(v for v in sandboxes.seed.d365["VendorsV2"] if v["dataAreaId"] == legal_entity)


def header_body(vendor, number, amount=100.0):
    return {
        "dataAreaId": vendor["dataAreaId"],
        "InvoiceAccount": vendor["VendorAccountNumber"],
        "InvoiceNumber": number,
        "InvoiceDate": "2026-11-02T12:00:00Z",
        "Currency": "USD",
        "ImportedAmount": amount,
        "InvoiceDescription": "test invoice",
    }


def line_body(header_ref, n, main_account, legal_entity="usmf"):
    return {
        "dataAreaId": legal_entity,
        "HeaderReference": header_ref,
        "InvoiceLineNumber": n,
        "LineDescription": f"line {n}",
        "ReceiveNow": 2,
        "UnitPrice": 25.0,
        "Currency": "USD",
        "MainAccountDisplayValue": main_account,
    }


def a_main_account(sandboxes, legal_entity="usmf"):
    rows = sandboxes.seed.d365.get("MainAccountLegalEntities") or []
    for row in rows:
        if row["LegalEntityId"].lower() == legal_entity:
            return row["MainAccountId"]
    return sandboxes.seed.d365["MainAccounts"][0]["MainAccountId"]


def data_entries(sandboxes):
    return [e for e in sandboxes.d365.log.snapshot() if e.path.startswith("/data/")]


def test_every_read_and_write_is_scoped_by_data_area_id(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    assert list(d365_client.query("VendorGroups", legal_entity="demf"))
    assert list(d365_client.query("LegalEntities"))  # shared entity set, no company
    assert d365_client.get("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": vendor["VendorAccountNumber"]})
    created = d365_client.create("VendorInvoiceHeaders", header_body(vendor, "SCOPE-1"))
    key = {"dataAreaId": "usmf", "HeaderReference": created["HeaderReference"]}
    d365_client.update("VendorInvoiceHeaders", key, {"InvoiceDescription": "changed"})
    d365_client.batch(
        [
            Changeset(
                [
                    BatchOperation(
                        "POST",
                        "VendorInvoiceLines",
                        line_body(created["HeaderReference"], 1, a_main_account(sandboxes)),
                    )
                ]
            )
        ]
    )
    assert d365_client.delete("VendorInvoiceHeaders", key) is True
    with pytest.raises(ValueError, match="company-scoped"):
        list(d365_client.query("VendorsV2"))

    entries = data_entries(sandboxes)
    assert {e.method for e in entries} == {"GET", "POST", "PATCH", "DELETE"}
    for e in entries:
        query = parse_qs(e.query)
        path = unquote(e.path)
        if e.path == "/data/$batch":
            parts = re.findall(r"\r\n\r\n(\{.*?\})\r\n", e.body)
            assert parts and all(json.loads(p).get("dataAreaId") for p in parts)
            continue
        set_name = path.split("/data/")[1].split("(")[0]
        scoped = entity_set(set_name).company_scoped
        if e.method in ("GET", "PATCH", "DELETE"):
            assert query.get("cross-company") == ["true"], e
            if scoped:
                assert "dataAreaId='" in path or "dataAreaId eq '" in query.get("$filter", [""])[0], e
        if e.method == "POST":
            assert json.loads(e.body)["dataAreaId"], e


def test_literal_with_quote_round_trips_and_cannot_inject(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    d365_client.create("VendorInvoiceHeaders", header_body(vendor, "O'NEIL-2026-001"))
    d365_client.create("VendorInvoiceHeaders", header_body(vendor, "PLAIN-1"))
    found = list(
        d365_client.query(
            "VendorInvoiceHeaders",
            legal_entity="usmf",
            filter=odata.eq("InvoiceNumber", "O'NEIL-2026-001"),
            select=["InvoiceNumber", "HeaderReference"],
        )
    )
    assert [r["InvoiceNumber"] for r in found] == ["O'NEIL-2026-001"]
    injected = list(
        d365_client.query(
            "VendorInvoiceHeaders", legal_entity="usmf", filter=odata.eq("InvoiceNumber", "x' or InvoiceNumber ne 'y")
        )
    )
    assert injected == []


def test_exact_lookup_drops_what_a_wildcard_matched_and_counts_top_after_the_filter(sandboxes, d365_client):
    """Issue 9: F&O reads ``*`` in an eq literal as a wildcard; ``query(exact=...)`` returns only equal rows."""
    vendor = existing_vendor(sandboxes)
    for number in ("WILD-1", "WILD-2", "WILD*", "wild-3"):
        d365_client.create("VendorInvoiceHeaders", header_body(vendor, number))
    account = vendor["VendorAccountNumber"]

    def numbers(value, **kwargs):
        return sorted(
            r["InvoiceNumber"]
            for r in d365_client.query(
                "VendorInvoiceHeaders",
                legal_entity="usmf",
                exact={"InvoiceNumber": value, "InvoiceAccount": account},
                select=["HeaderReference"],
                **kwargs,
            )
        )

    assert numbers("WILD*") == ["WILD*"]
    assert numbers("WILD*", top=1) == ["WILD*"]  # a server-side $top=1 could have returned WILD-1
    assert numbers("Wild-3") == ["wild-3"]  # F&O's collation: case-insensitive
    assert numbers("*") == []
    assert numbers("WILD-%") == [] and numbers("WILD-_") == []


def test_unknown_property_rejected_by_client_and_by_sandbox_like_d365(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    with pytest.raises(ValueError, match="has no properties \\['VendorName2'\\]"):
        d365_client.create("VendorInvoiceHeaders", header_body(vendor, "X") | {"VendorName2": "nope"})
    assert not [e for e in data_entries(sandboxes) if e.method == "POST"]
    token = d365_client.auth.token()
    response = httpx.post(
        f"{sandboxes.d365_url}/data/VendorInvoiceHeaders",
        headers={"Authorization": f"Bearer {token}"},
        json=header_body(vendor, "X") | {"VendorName2": "nope"},
    )
    assert response.status_code == 400
    inner = response.json()["error"]["innererror"]
    assert inner["message"] == (
        "The property 'VendorName2' does not exist on type "
        "'Microsoft.Dynamics.DataEntities.VendorInvoiceHeader'. Make sure to only use "
        "property names that are defined by the type or mark the type as open type."
    )


def test_missing_key_part_rejected(sandboxes, d365_client):
    with pytest.raises(ValueError, match="addressed by"):
        d365_client.get("VendorsV2", {"VendorAccountNumber": "1"})
    token = d365_client.auth.token()
    response = httpx.get(
        f"{sandboxes.d365_url}/data/VendorsV2(VendorAccountNumber='1')?cross-company=true",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    assert "number of keys specified in the URI does not match" in response.text


def test_duplicate_key_is_http_500_record_already_exists(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    body = {
        "dataAreaId": "usmf",
        "VendorAccountNumber": "DUP-1",
        "VendorOrganizationName": "Dup Ltd",
        "VendorGroupId": vendor["VendorGroupId"],
    }
    d365_client.create("VendorsV2", body)
    with pytest.raises(D365Error) as err:
        d365_client.create("VendorsV2", body)
    assert err.value.status == 500 and err.value.is_duplicate
    assert "The record already exists." in str(err.value)
    assert err.value.error_type.endswith("AxODataWriteException")
    assert len([e for e in data_entries(sandboxes) if e.method == "POST"]) == 2  # business error: not retried


def test_foreign_key_failures_carry_the_infolog(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    with pytest.raises(D365Error) as err:
        d365_client.create("VendorInvoiceHeaders", header_body(vendor, "FK-1") | {"InvoiceAccount": "NO-SUCH"})
    assert err.value.is_validation and "NO-SUCH" in err.value.detail


def test_token_renewed_two_minutes_before_expiry_by_the_client_clock_and_once_on_401(sandboxes):
    clock = FakeClock()
    lifetime = sandboxes.d365.config.token_lifetime_s
    assert lifetime == 3599  # Entra's usual hour: renewed 120 s before it ends
    with make_d365_client(sandboxes, clock=clock) as client:
        list(client.query("LegalEntities"))
        clock.set(clock.now + lifetime - 120 - 1)
        list(client.query("LegalEntities"))
        assert client.auth.tokens_minted == 1
        clock.advance(1)
        list(client.query("LegalEntities"))
        assert client.auth.tokens_minted == 2
        sandboxes.d365.revoke_tokens()
        assert list(client.query("LegalEntities"))
        assert client.auth.tokens_minted == 3
    entries = sandboxes.d365.log.snapshot()
    token_path = f"/{sandboxes.env()['D365_TENANT_ID']}/oauth2/v2.0/token"
    assert [(e.path, e.status) for e in entries] == [
        (token_path, 200),
        ("/data/LegalEntities", 200),
        ("/data/LegalEntities", 200),
        (token_path, 200),
        ("/data/LegalEntities", 200),
        ("/data/LegalEntities", 401),
        (token_path, 200),
        ("/data/LegalEntities", 200),
    ]
    tokens = [e.headers["authorization"] for e in entries if e.path == "/data/LegalEntities"]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3] != tokens[4]


def test_foreign_audience_token_is_rejected_with_401(sandboxes):
    env = sandboxes.env()
    token = httpx.post(
        f"{sandboxes.d365_url}/{env['D365_TENANT_ID']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env["D365_CLIENT_ID"],
            "client_secret": env["D365_CLIENT_SECRET"],
            "scope": "https://graph.microsoft.com/.default",
        },
    ).json()["access_token"]
    response = httpx.get(f"{sandboxes.d365_url}/data/LegalEntities", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_wrong_secret_and_wrong_scope_fail_clearly(sandboxes):
    env = sandboxes.env()
    with D365Client(
        env["D365_BASE_URL"],
        env["D365_TENANT_ID"],
        env["D365_CLIENT_ID"],
        "bad-secret-123",
        authority_url=env["D365_AUTHORITY_URL"],
    ) as client:
        with pytest.raises(EntraAuthError) as err:
            client.ping("usmf")
    assert "invalid_client" in str(err.value) and "D365_CLIENT_SECRET" in str(err.value)
    assert "bad-secret-123" not in str(err.value)
    with D365Client(
        env["D365_BASE_URL"] + ".other",
        env["D365_TENANT_ID"],
        env["D365_CLIENT_ID"],
        env["D365_CLIENT_SECRET"],
        authority_url=env["D365_AUTHORITY_URL"],
    ) as client:
        with pytest.raises(EntraAuthError, match="invalid_scope"):
            client.auth.token()


def test_429_waits_retry_after_exactly(sandboxes):
    sandboxes.d365.injector.script(
        ScriptedFault(kind="429", method="GET", path_regex="^/data/LegalEntities", retry_after_s=2)
    )
    sleeps: list[float] = []
    with make_d365_client(sandboxes, sleep=sleeps.append) as client:
        assert list(client.query("LegalEntities"))
    assert sleeps == [2.0]
    entries = [e for e in data_entries(sandboxes) if e.path == "/data/LegalEntities"]
    assert [(e.status, e.injected) for e in entries] == [(429, "429"), (200, None)]


def test_429_waits_exactly_until_an_http_date_retry_after(sandboxes):
    clock = FakeClock()
    sandboxes.d365.injector.clock = clock  # the sandbox dates Retry-After with the same clock
    sandboxes.d365.injector.script(
        ScriptedFault(
            kind="429", method="GET", path_regex="^/data/LegalEntities", retry_after_s=9, retry_after_format="http-date"
        )
    )
    with make_d365_client(sandboxes, clock=clock, sleep=clock.sleep) as client:
        assert list(client.query("LegalEntities"))
    assert clock.sleeps == [9.0]
    assert [e.injected for e in data_entries(sandboxes)] == ["429", None]


def test_service_protection_budget_429_is_honoured(sandboxes):
    sandboxes.d365.config.request_budget = 3
    sandboxes.d365.config.budget_window_s = 3600  # nothing leaves the window by itself during the test
    sandboxes.d365.config.budget_retry_after_s = 1
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # waiting Retry-After lets the sandbox's budget window pass
        sleeps.append(seconds)
        sandboxes.d365.reset_budget()

    with make_d365_client(sandboxes, sleep=sleep) as client:
        for _ in range(6):
            assert list(client.query("LegalEntities", top=1))
    entries = data_entries(sandboxes)
    assert [e.status for e in entries] == [200, 200, 200, 429, 200, 200, 200]
    assert [e.injected for e in entries] == [None] * 7  # the sandbox's own throttling, not an injected fault
    assert sleeps == [1.0]


def test_ambiguous_post_is_verified_by_lookup_not_duplicated(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    sandboxes.d365.injector.script(
        ScriptedFault(kind="drop_after", method="POST", path_regex="^/data/VendorInvoiceHeaders$")
    )

    def lookup():
        rows = list(
            d365_client.query(
                "VendorInvoiceHeaders",
                legal_entity="usmf",
                filter=odata.and_(
                    odata.eq("InvoiceNumber", "AMB-1"), odata.eq("InvoiceAccount", vendor["VendorAccountNumber"])
                ),
            )
        )
        return rows[0] if rows else None

    created = d365_client.create("VendorInvoiceHeaders", header_body(vendor, "AMB-1"), verify=lookup)
    assert created["InvoiceNumber"] == "AMB-1"
    stored = [r for r in sandboxes.d365.state.records("VendorInvoiceHeaders") if r["InvoiceNumber"] == "AMB-1"]
    assert len(stored) == 1
    # the drop fired once, after the sandbox created the header; the lookup found it; no second POST
    assert [(e.method, e.path, e.status, e.injected) for e in data_entries(sandboxes)] == [
        ("POST", "/data/VendorInvoiceHeaders", 201, "drop_after"),
        ("GET", "/data/VendorInvoiceHeaders", 200, None),
    ]
    mark = sandboxes.d365.log.next_seq()

    # A POST dropped *before* the server ran it is sent again after the lookup finds nothing.
    sandboxes.d365.injector.script(
        ScriptedFault(kind="drop_before", method="POST", path_regex="^/data/VendorInvoiceHeaders$")
    )

    def lookup2():
        rows = list(
            d365_client.query("VendorInvoiceHeaders", legal_entity="usmf", filter=odata.eq("InvoiceNumber", "AMB-2"))
        )
        return rows[0] if rows else None

    d365_client.create("VendorInvoiceHeaders", header_body(vendor, "AMB-2"), verify=lookup2)
    assert len([r for r in sandboxes.d365.state.records("VendorInvoiceHeaders") if r["InvoiceNumber"] == "AMB-2"]) == 1
    assert [(e.method, e.path, e.status, e.injected) for e in data_entries(sandboxes) if e.seq >= mark] == [
        ("POST", "/data/VendorInvoiceHeaders", -1, "drop_before"),
        ("GET", "/data/VendorInvoiceHeaders", 200, None),
        ("POST", "/data/VendorInvoiceHeaders", 201, None),
    ]
    assert sandboxes.d365.injector.pending() == []


def test_batch_changeset_atomic_and_every_part_read(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    account = a_main_account(sandboxes)
    good = Changeset(
        [
            BatchOperation("POST", "VendorInvoiceHeaders", header_body(vendor, "B-1") | {"HeaderReference": "CP-B-1"}),
            BatchOperation("POST", "VendorInvoiceLines", line_body("CP-B-1", 1, account)),
            BatchOperation("POST", "VendorInvoiceLines", line_body("CP-B-1", 2, account)),
        ]
    )
    bad = Changeset(
        [
            BatchOperation("POST", "VendorInvoiceHeaders", header_body(vendor, "B-2") | {"HeaderReference": "CP-B-2"}),
            BatchOperation("POST", "VendorInvoiceLines", line_body("CP-B-2", 1, "999999")),
        ]
    )
    results = d365_client.batch([good, bad])
    assert results[0].ok and [p.status for p in results[0].parts] == [201, 201, 201]
    assert not results[1].ok and results[1].error.status == 500 and "999999" in results[1].error.detail
    headers = {r["HeaderReference"] for r in sandboxes.d365.state.records("VendorInvoiceHeaders")}
    assert "CP-B-1" in headers and "CP-B-2" not in headers  # failed changeset rolled back
    lines = [r for r in sandboxes.d365.state.records("VendorInvoiceLines") if r["HeaderReference"] == "CP-B-1"]
    assert len(lines) == 2
    batch_entry = [e for e in data_entries(sandboxes) if e.path == "/data/$batch"][0]
    assert batch_entry.status == 200  # outer 200 although a changeset failed


def test_posted_invoice_is_gone_from_pending_and_cannot_be_modified(sandboxes, d365_client):
    vendor = existing_vendor(sandboxes)
    created = d365_client.create("VendorInvoiceHeaders", header_body(vendor, "POST-1"))
    key = {"dataAreaId": "usmf", "HeaderReference": created["HeaderReference"]}
    sandboxes.d365.state.post_invoice("usmf", created["HeaderReference"])
    assert d365_client.get("VendorInvoiceHeaders", key) is None
    with pytest.raises(D365Error) as err:
        d365_client.update("VendorInvoiceHeaders", key, {"InvoiceDescription": "late edit"})
    assert err.value.is_not_found
    posted = list(
        d365_client.query("VendInvoiceJourBiEntities", legal_entity="usmf", filter=odata.eq("InvoiceId", "POST-1"))
    )
    assert len(posted) == 1 and posted[0]["InvoiceAccount"] == vendor["VendorAccountNumber"]


@pytest.fixture
def sandbox_options(sandbox_options):
    sandbox_options.d365_page_size = 4
    return sandbox_options


def test_next_link_paging_returns_every_row_once(sandboxes, d365_client):
    expected = sorted(r["ItemNumber"] for r in sandboxes.seed.d365["ReleasedProductsV2"] if r["dataAreaId"] == "usmf")
    assert len(expected) > 8
    rows = list(d365_client.query("ReleasedProductsV2", legal_entity="usmf", select=["ItemNumber"]))
    assert sorted(r["ItemNumber"] for r in rows) == expected
    gets = [e for e in data_entries(sandboxes) if e.path == "/data/ReleasedProductsV2"]
    assert len(gets) == math.ceil(len(expected) / 4)  # followed @odata.nextLink page by page, no extra call
    assert all("cross-company=true" in e.query for e in gets)
