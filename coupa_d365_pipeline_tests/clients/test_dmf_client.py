"""DmfClient against the D365 sandbox's DMF package API over real HTTP (loopback uvicorn)."""

from __future__ import annotations

import copy
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest

from coupa_d365_pipeline.d365.client import D365Client, D365Error
from coupa_d365_pipeline.d365.dmf import DmfClient, DmfExecutionStatus, DmfSubmissionUnknownError, DmfTimeoutError
from coupa_d365_pipeline.d365.dmf_package import DmfPackage, build_package
from coupa_d365_pipeline.sandbox.d365 import D365Sandbox, D365SandboxConfig
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.sandbox.server import SandboxServer, bind_socket
from coupa_d365_pipeline_tests.sandbox.test_d365_sandbox import master_data

GROUP = "Coupa documents"
DIMS = "001-CC\\-10-022"  # BusinessUnit-CostCenter-Department, the delimiter in "CC-10" escaped
FAST = {"dmf_execution_s": 0.05}


class Env:
    def __init__(self, sandbox: D365Sandbox, server: SandboxServer, d365: D365Client) -> None:
        self.sandbox, self.server, self.d365 = sandbox, server, d365
        self.dmf = DmfClient(d365)

    def actions(self, name: str) -> int:
        return sum(1 for e in self.sandbox.log.snapshot() if e.path.endswith("." + name))


@contextmanager
def running(**overrides: Any) -> Iterator[Env]:
    sock = bind_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sandbox = D365Sandbox(D365SandboxConfig(environment_url=url, **(FAST | overrides)), master_data())
    server = SandboxServer(sandbox.app, sock=sock).start()
    d365 = D365Client(url, "contoso-tenant", "sandbox-app", "sandbox-app-secret", authority_url=url)
    try:
        yield Env(sandbox, server, d365)
    finally:
        d365.close()
        server.stop()


@pytest.fixture
def env() -> Iterator[Env]:
    with running() as e:
        yield e


def invoice(n: int, vendor: str = "US-101", main_account: str = "600150") -> tuple[dict, list[dict]]:
    header = {
        "dataAreaId": "usmf",
        "HeaderReference": f"COUPA-{n}",
        "InvoiceNumber": f"INV-{n}",
        "InvoiceAccount": vendor,
        "InvoiceDate": "2026-01-15T12:00:00Z",
        "Currency": "USD",
        "ImportedAmount": Decimal("170.50"),
        "InvoiceDescription": f'Coupa invoice {n}, "rush"\nsecond line',
    }
    lines = [
        {
            "dataAreaId": "usmf",
            "HeaderReference": f"COUPA-{n}",
            "InvoiceLineNumber": 1,
            "LineDescription": "Paper, A4",
            "ReceiveNow": Decimal("2"),
            "UnitPrice": Decimal("75.25"),
            "Amount": Decimal("150.50"),
            "Currency": "USD",
            "MainAccountDisplayValue": main_account,
            "DimensionDisplayValue": DIMS,
        },
        {
            "dataAreaId": "usmf",
            "HeaderReference": f"COUPA-{n}",
            "InvoiceLineNumber": 2,
            "LineDescription": "Item line",
            "ReceiveNow": Decimal("1"),
            "UnitPrice": Decimal("20.00"),
            "Amount": Decimal("20.00"),
            "Currency": "USD",
            "ItemNumber": "D0001",
            "MainAccountDisplayValue": "600150",
            "DimensionDisplayValue": DIMS,
        },
    ]
    return header, lines


def purchase_order(number: str) -> tuple[dict, list[dict]]:
    header = {
        "dataAreaId": "usmf",
        "PurchaseOrderNumber": number,
        "OrderVendorAccountNumber": "US-101",
        "InvoiceVendorAccountNumber": "US-101",
        "CurrencyCode": "USD",
        "VendorOrderReference": number,
        "PurchaseOrderName": "O'Brien Supplies",
        "RequestedDeliveryDate": "2026-02-01T12:00:00Z",
        "DefaultLedgerDimensionDisplayValue": DIMS,
    }
    line = {
        "dataAreaId": "usmf",
        "PurchaseOrderNumber": number,
        "LineNumber": 1,
        "LineDescription": "Widget",
        "OrderedPurchaseQuantity": Decimal("3"),
        "PurchaseUnitSymbol": "ea",
        "PurchasePrice": Decimal("10.00"),
        "LineAmount": Decimal("30.00"),
        "ItemNumber": "D0001",
        "MainAccountIdDisplayValue": "600150",
        "DefaultLedgerDimensionDisplayValue": DIMS,
        "RequestedDeliveryDate": "2026-02-01T12:00:00Z",
    }
    return header, [line]


def documents(invoices: list[tuple[dict, list[dict]]], pos: list[tuple[dict, list[dict]]] = ()) -> dict[str, list]:
    return {
        "VendorInvoiceHeaders": [h for h, _ in invoices],
        "VendorInvoiceLines": [ln for _, lines in invoices for ln in lines],
        "PurchaseOrderHeadersV2": [h for h, _ in pos],
        "PurchaseOrderLinesV2": [ln for _, lines in pos for ln in lines],
    }


def package_of(rows: dict[str, list]) -> DmfPackage:
    return build_package(rows, legal_entity="usmf", definition_group=GROUP)


def rewrite(package: DmfPackage, edit: Any) -> DmfPackage:
    """The same package with ``edit(name, bytes) -> bytes`` applied to every member."""
    source = zipfile.ZipFile(io.BytesIO(package.content))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, edit(name, source.read(name)))
    return package.model_copy(update={"content": out.getvalue()})


def odata_view(d365: D365Client, entity_set: str) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k != "@odata.etag"} for r in d365.query(entity_set, legal_entity="usmf")]
    return sorted(rows, key=repr)


SETS = ("VendorInvoiceHeaders", "VendorInvoiceLines", "PurchaseOrderHeadersV2", "PurchaseOrderLinesV2")


def test_package_of_invoices_and_pos_lands_exactly_like_the_odata_path():
    with running(dmf_execution_s=0.5) as env:  # long enough to see Executing on a busy machine
        _round_trip(env)


def _round_trip(env: Env) -> None:
    rows = documents([invoice(1), invoice(2)], [purchase_order("PO-100"), purchase_order("PO-101")])
    package = package_of(rows)
    before = {s: odata_view(env.d365, s) for s in SETS}

    assert env.dmf.submit(package, execution_id="run-1-usmf") == "run-1-usmf"
    assert env.dmf.status("run-1-usmf").status is DmfExecutionStatus.EXECUTING  # asynchronous
    report = env.dmf.wait("run-1-usmf", initial_delay_s=0.02)
    assert report.status is DmfExecutionStatus.SUCCEEDED
    assert env.dmf.execution_errors("run-1-usmf") == []
    check = env.dmf.read_back(package)
    assert check.complete and check.landed == check.sent == 2 + 4 + 2 + 2

    with running() as other:  # the same payloads through OData into a fresh sandbox
        for entity_set in SETS:
            for body in rows[entity_set]:
                other.d365.create(entity_set, body)
        for entity_set in SETS:
            dmf_rows = [r for r in odata_view(env.d365, entity_set) if r not in before[entity_set]]
            odata_rows = [r for r in odata_view(other.d365, entity_set) if r not in before[entity_set]]
            assert dmf_rows == odata_rows, entity_set
            assert len(dmf_rows) == len(rows[entity_set])
    header = next(r for r in odata_view(env.d365, "VendorInvoiceHeaders") if r["HeaderReference"] == "COUPA-1")
    assert header["InvoiceDescription"] == 'Coupa invoice 1, "rush"\nsecond line'
    assert str(header["ImportedAmount"]) in ("170.5", "170.50")
    assert env.actions("ImportFromPackage") == 1 and env.actions("GetAzureWriteUrl") == 1


def test_bad_rows_fail_alone_with_their_keys_and_the_good_rows_land(env: Env):
    good, unknown_vendor, unknown_account = invoice(1), invoice(2, vendor="US-999"), invoice(3, main_account="999999")
    package = package_of(documents([good, unknown_vendor, unknown_account]))
    env.dmf.submit(package, execution_id="run-2-usmf")
    assert env.dmf.wait("run-2-usmf", initial_delay_s=0.02).status is DmfExecutionStatus.PARTIALLY_SUCCEEDED

    errors = env.dmf.execution_errors("run-2-usmf")
    failed = {(e.entity_name, tuple(e.keys.values())) for e in errors}
    assert failed == {
        ("Vendor invoice header", ("COUPA-2",)),  # unknown vendor
        ("Vendor invoice line", ("COUPA-2", "1")),  # its lines have no header to go to
        ("Vendor invoice line", ("COUPA-2", "2")),
        ("Vendor invoice line", ("COUPA-3", "1")),  # unknown main account
    }
    by_key = {tuple(e.keys.values()): e.message for e in errors}
    assert "'US-999'" in by_key[("COUPA-2",)] and "Vendors" in by_key[("COUPA-2",)]
    assert "'999999'" in by_key[("COUPA-3", "1")] and "Main accounts" in by_key[("COUPA-3", "1")]
    assert {e.row_number for e in errors if e.entity_name == "Vendor invoice header"} == {2}

    assert env.dmf.target_error_keys("run-2-usmf", "Vendor invoice header", delay_s=0) == [
        {"HEADERREFERENCE": "COUPA-2"}
    ]
    assert env.dmf.target_error_keys("run-2-usmf", "Vendor invoice line", delay_s=0) == [
        {"HEADERREFERENCE": "COUPA-2", "INVOICELINENUMBER": "1"},
        {"HEADERREFERENCE": "COUPA-2", "INVOICELINENUMBER": "2"},
        {"HEADERREFERENCE": "COUPA-3", "INVOICELINENUMBER": "1"},
    ]
    check = env.dmf.read_back(package)
    headers, lines = check.entity("VendorInvoiceHeaders"), check.entity("VendorInvoiceLines")
    assert headers is not None and lines is not None
    assert headers.missing == (("COUPA-2",),)
    assert set(lines.missing) == {("COUPA-2", 1), ("COUPA-2", 2), ("COUPA-3", 1)}
    assert set(lines.found) == {("COUPA-1", 1), ("COUPA-1", 2), ("COUPA-3", 2)}


def test_all_rows_failing_is_failed(env: Env):
    env.dmf.submit(package_of(documents([invoice(4, vendor="US-999")])), execution_id="run-3")
    assert env.dmf.wait("run-3", initial_delay_s=0.02).status is DmfExecutionStatus.FAILED


def strip_entity_maps(name: str, data: bytes) -> bytes:
    if name != "Manifest.xml":
        return data
    return re.sub(rb"<EntityMapList>.*?</EntityMapList>", b"", data, flags=re.S)


def test_missing_entity_mapping_succeeds_with_zero_rows_and_read_back_flags_it():
    with running(dmf_data_projects={GROUP: (), "Mapped": ("Vendor invoice header",)}) as env:
        package = rewrite(package_of(documents([invoice(5)])), strip_entity_maps)
        env.dmf.submit(package, execution_id="run-4")
        assert env.dmf.wait("run-4", initial_delay_s=0.02).status is DmfExecutionStatus.SUCCEEDED  # the trap
        assert env.dmf.execution_errors("run-4") == []
        check = env.dmf.read_back(package)
        assert check.nothing_landed and not check.complete and check.sent == 3

        # a data project that maps the header entity itself imports it from the same package
        mapped = package.model_copy(update={"definition_group": "Mapped"})
        env.dmf.submit(mapped, execution_id="run-5")
        assert env.dmf.wait("run-5", initial_delay_s=0.02).status is DmfExecutionStatus.SUCCEEDED
        check = env.dmf.read_back(mapped)
        assert check.entity("VendorInvoiceHeaders").missing == ()  # type: ignore[union-attr]
        assert len(check.entity("VendorInvoiceLines").missing) == 2  # type: ignore[union-attr]


def test_unknown_column_fails_the_entity_and_lands_nothing(env: Env):
    def rename(name: str, data: bytes) -> bytes:
        if name != "Vendor invoice header.csv":
            return data
        return data.replace("INVOICEDESCRIPTION".encode("utf-16-le"), "INVOICEMEMO".encode("utf-16-le"), 1)

    package = rewrite(package_of(documents([invoice(6)])), rename)
    env.dmf.submit(package, execution_id="run-6")
    assert env.dmf.wait("run-6", initial_delay_s=0.02).status is DmfExecutionStatus.FAILED
    errors = env.dmf.execution_errors("run-6")
    assert any("INVOICEMEMO" in e.message and e.entity_name == "Vendor invoice header" for e in errors)
    assert env.dmf.read_back(package).landed == 0


def test_lf_line_endings_fail_with_the_mapping_error(env: Env):
    def lf(name: str, data: bytes) -> bytes:
        return data.replace("\r\n".encode("utf-16-le"), "\n".encode("utf-16-le")) if name.endswith(".csv") else data

    package = rewrite(package_of(documents([invoice(7)])), lf)
    env.dmf.submit(package, execution_id="run-7")
    assert env.dmf.wait("run-7", initial_delay_s=0.02).status is DmfExecutionStatus.FAILED
    assert any("the mapping is incorrect for entity" in e.message for e in env.dmf.execution_errors("run-7"))


def test_unknown_entity_label_is_refused_at_import(env: Env):
    def odata_name(name: str, data: bytes) -> bytes:
        return data.replace(b">Vendor invoice header<", b">VendorInvoiceHeaders<") if name == "Manifest.xml" else data

    package = rewrite(package_of(documents([invoice(8)])), odata_name)
    with pytest.raises(D365Error, match="Entity VendorInvoiceHeaders does not exist in the target environment"):
        env.dmf.submit(package, execution_id="run-8")
    assert env.dmf.status("run-8").found is False


def test_not_found_yet_is_pending_and_the_poll_waits_it_out():
    with running(dmf_status_hidden_s=0.2) as env:
        unknown = env.dmf.status("never-submitted")
        assert (unknown.found, unknown.status, unknown.is_final) == (False, DmfExecutionStatus.UNKNOWN, False)
        env.dmf.submit(package_of(documents([invoice(9)])), execution_id="run-9")
        assert env.dmf.status("run-9").found is False  # just submitted: not visible yet
        assert env.dmf.wait("run-9", initial_delay_s=0.05).status is DmfExecutionStatus.SUCCEEDED


def test_poll_backs_off_and_gives_up_with_an_injected_clock(env: Env):
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    dmf = DmfClient(env.d365, sleep=sleep, monotonic=lambda: now[0])
    with pytest.raises(DmfTimeoutError) as caught:
        dmf.wait("never-submitted", timeout_s=40, initial_delay_s=1, max_delay_s=8)
    assert sleeps == [1, 2, 4, 8, 8, 8, 8]  # 39 s slept; one more would pass 40
    assert caught.value.execution_id == "never-submitted"


def test_same_execution_id_is_never_imported_twice(env: Env):
    package = package_of(documents([invoice(10)]))
    env.dmf.submit(package, execution_id="run-10")
    env.dmf.wait("run-10", initial_delay_s=0.02)
    landed = copy.deepcopy(odata_view(env.d365, "VendorInvoiceHeaders"))

    # a resumed run: submit and import_package both see the execution and post nothing
    assert env.dmf.submit(package, execution_id="run-10") == "run-10"
    blob = env.dmf.get_write_url("again.zip")
    env.dmf.upload(blob, package.content)
    assert (
        env.dmf.import_package(
            package_url=blob.blob_url, definition_group=GROUP, execution_id="run-10", legal_entity="usmf"
        )
        == "run-10"
    )
    assert env.actions("ImportFromPackage") == 1
    # the sandbox refuses a duplicate id outright, too
    raw = env.d365.action(
        "DataManagementDefinitionGroups",
        "ImportFromPackage",
        {
            "packageUrl": blob.blob_url,
            "definitionGroupId": GROUP,
            "executionId": "run-10",
            "execute": True,
            "overwrite": True,
            "legalEntityId": "usmf",
        },
        idempotent=False,
    )
    assert raw.status_code == 400 and "already exists" in raw.text
    assert list(env.sandbox.dmf.executions) == ["run-10"]
    assert odata_view(env.d365, "VendorInvoiceHeaders") == landed


def test_an_import_whose_answer_was_lost_is_settled_by_asking_not_by_posting_again():
    with running(dmf_status_hidden_s=0.0) as env:
        env.sandbox.injector.script(ScriptedFault(kind="drop_after", method="POST", path_regex="ImportFromPackage$"))
        package = package_of(documents([invoice(11)]))
        with pytest.raises(DmfSubmissionUnknownError) as caught:
            env.dmf.submit(package, execution_id="run-11")
        assert caught.value.execution_id == "run-11"
        assert env.dmf.submit(package, execution_id="run-11") == "run-11"  # found by status: not posted again
        assert env.actions("ImportFromPackage") == 1
        assert env.dmf.wait("run-11", initial_delay_s=0.02).status is DmfExecutionStatus.SUCCEEDED

    with running(dmf_status_hidden_s=5.0) as env:  # the execution record is not visible yet
        env.sandbox.injector.script(ScriptedFault(kind="drop_after", method="POST", path_regex="ImportFromPackage$"))
        package = package_of(documents([invoice(12)]))
        with pytest.raises(DmfSubmissionUnknownError):
            env.dmf.submit(package, execution_id="run-12")
        # status says "not found", so the client posts again; D365 refuses the known id: still one execution
        assert env.dmf.submit(package, execution_id="run-12") == "run-12"
        assert env.actions("ImportFromPackage") == 2
        assert list(env.sandbox.dmf.executions) == ["run-12"]


def test_blob_put_needs_the_block_blob_header_and_the_sas_signature(env: Env):
    blob = env.dmf.get_write_url("x.zip")
    assert "sig=" not in repr(blob)  # the SAS is a credential
    http = env.d365.http
    assert http.put(blob.blob_url, content=b"zip").status_code == 400
    assert (
        http.put(
            blob.blob_url.split("&sig=")[0] + "&sig=forged", content=b"zip", headers={"x-ms-blob-type": "BlockBlob"}
        ).status_code
        == 403
    )
    assert http.put(blob.blob_url, content=b"zip", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 201
