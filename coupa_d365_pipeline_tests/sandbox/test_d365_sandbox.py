"""The D365 F&O sandbox over real HTTP (uvicorn on loopback + httpx)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from coupa_d365_pipeline.sandbox.d365 import D365Sandbox, D365SandboxConfig, split_display_value
from coupa_d365_pipeline.sandbox.server import SandboxServer, bind_socket

TENANT = "contoso-tenant"
CLIENT, SECRET = "sandbox-app", "sandbox-app-secret"


def master_data() -> dict[str, list[dict]]:
    return {
        "LegalEntities": [{"LegalEntityId": "DAT", "Name": "Default"}, {"LegalEntityId": "USMF", "Name": "Contoso US"}],
        "Currencies": [{"CurrencyCode": "USD"}, {"CurrencyCode": "EUR"}],
        "VendorGroups": [{"dataAreaId": "usmf", "VendorGroupId": "10"}, {"dataAreaId": "dat", "VendorGroupId": "10"}],
        "PaymentTerms": [{"dataAreaId": "usmf", "Name": "Net30", "NumberOfDays": 30}],
        "VendorsV2": [
            {
                "dataAreaId": "usmf",
                "VendorAccountNumber": "US-101",
                "VendorOrganizationName": "O'Brien Supplies",
                "VendorGroupId": "10",
                "CurrencyCode": "USD",
                "OnHoldStatus": "No",
            },
            {
                "dataAreaId": "usmf",
                "VendorAccountNumber": "US-102",
                "VendorOrganizationName": "Fabrikam",
                "VendorGroupId": "10",
                "CurrencyCode": "EUR",
            },
            {
                "dataAreaId": "dat",
                "VendorAccountNumber": "DAT-001",
                "VendorOrganizationName": "Dat Vendor",
                "VendorGroupId": "10",
            },
        ],
        "ReleasedProductsV2": [{"dataAreaId": "usmf", "ItemNumber": "D0001", "PurchaseUnitSymbol": "ea"}],
        "UnitsOfMeasure": [{"UnitSymbol": "ea"}],
        "MainAccounts": [
            {"ChartOfAccounts": "Shared", "MainAccountId": "600150", "Name": "Supplies"},
            {"ChartOfAccounts": "Shared", "MainAccountId": "600160", "Name": "Other"},
        ],
        "MainAccountLegalEntities": [{"ChartOfAccounts": "Shared", "MainAccountId": "600150", "LegalEntityId": "usmf"}],
        "FinancialDimensionValues": [
            {"FinancialDimension": "BusinessUnit", "LegalEntityId": "", "DimensionValue": "001"},
            {"FinancialDimension": "CostCenter", "LegalEntityId": "usmf", "DimensionValue": "CC-10"},
            {"FinancialDimension": "Department", "LegalEntityId": "usmf", "DimensionValue": "022"},
        ],
        "PurchaseOrderHeadersV2": [
            {
                "dataAreaId": "usmf",
                "PurchaseOrderNumber": "PO-EX-1",
                "OrderVendorAccountNumber": "US-101",
                "CurrencyCode": "USD",
            }
        ],
        "PurchaseOrderLinesV2": [
            {
                "dataAreaId": "usmf",
                "PurchaseOrderNumber": "PO-EX-1",
                "LineNumber": 1,
                "ItemNumber": "D0001",
                "OrderedPurchaseQuantity": 2,
                "PurchasePrice": 50,
            }
        ],
    }


class Env:
    def __init__(self, sandbox: D365Sandbox, server: SandboxServer) -> None:
        self.sb = sandbox
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=10)
        self._token: str | None = None

    def token(self, scope: str | None = None) -> str:
        resp = self.http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT,
                "client_secret": SECRET,
                "scope": scope or f"{self.url}/.default",
            },
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    def headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = self.token()
        return {"Authorization": f"Bearer {self._token}", "OData-Version": "4.0", "Accept": "application/json"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None, headers=self.headers())

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.headers())

    def patch(self, path: str, body: Any) -> httpx.Response:
        return self.http.patch(path, json=body, headers=self.headers())

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(path, headers=self.headers())


def start(clock: Any = None, **overrides: Any) -> tuple[Env, SandboxServer]:
    """A D365 sandbox with this module's master data on a free loopback port (its URL is the token audience)."""
    sock = bind_socket()
    port = sock.getsockname()[1]
    config = D365SandboxConfig(environment_url=f"http://127.0.0.1:{port}", **overrides)
    sandbox = D365Sandbox(config, master_data(), **({"clock": clock} if clock is not None else {}))
    server = SandboxServer(sandbox.app, sock=sock).start()
    return Env(sandbox, server), server


@pytest.fixture
def env() -> Iterator[Env]:
    e, server = start()
    try:
        yield e
    finally:
        e.http.close()
        server.stop()


def inner(resp: httpx.Response) -> str:
    return resp.json()["error"]["innererror"]["message"]


HEADER = {
    "dataAreaId": "usmf",
    "InvoiceAccount": "US-101",
    "InvoiceNumber": "COUPA-INV-1",
    "InvoiceDate": "2026-01-15T12:00:00Z",
    "Currency": "USD",
    "InvoiceDescription": "Coupa 1",
    "ImportedAmount": 150,
}


def create_invoice(env: Env, number: str = "COUPA-INV-1", lines: int = 2) -> str:
    resp = env.post("/data/VendorInvoiceHeaders", {**HEADER, "InvoiceNumber": number})
    assert resp.status_code == 201, resp.text
    ref = resp.json()["HeaderReference"]
    for n in range(1, lines + 1):
        line = {
            "dataAreaId": "usmf",
            "HeaderReference": ref,
            "InvoiceLineNumber": n,
            "LineDescription": f"l{n}",
            "ReceiveNow": 1,
            "UnitPrice": 50 * n,
            "Amount": 50 * n,
            "Currency": "USD",
            "MainAccountDisplayValue": "600150",
            "DimensionDisplayValue": "001-CC\\-10-022",
        }
        r = env.post("/data/VendorInvoiceLines", line)
        assert r.status_code == 201, r.text
    return ref


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


def test_token_success_and_data_access(env: Env) -> None:
    resp = env.http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": SECRET,
            "scope": f"{env.url.upper().replace('HTTP://', 'http://')}/.default",
        },
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599 and body["ext_expires_in"] == 3599
    header, payload, sig = body["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "==").decode())
    assert claims["aud"] == env.url.lower() and claims["tid"] == TENANT and claims["appid"] == CLIENT and claims["oid"]
    assert claims["exp"] - claims["iat"] == 3599
    ok = env.http.get("/data/Currencies", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert ok.status_code == 200 and {r["CurrencyCode"] for r in ok.json()["value"]} == {"USD", "EUR"}
    # HTTP Basic client authentication and the v1 endpoint work too
    basic = env.http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        auth=(CLIENT, SECRET),
        data={"grant_type": "client_credentials", "scope": f"{env.url}/.default"},
    )
    assert basic.status_code == 200
    v1 = env.http.post(
        f"/{TENANT}/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET, "resource": env.url},
    )
    assert v1.status_code == 200
    ok1 = env.http.get("/data/Currencies", headers={"Authorization": f"Bearer {v1.json()['access_token']}"})
    assert ok1.status_code == 200


def test_no_token_is_401(env: Env) -> None:
    resp = env.http.get("/data/Currencies")
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    resp = env.http.get("/data/Currencies", headers={"Authorization": "Bearer not-a-token"})
    assert resp.status_code == 401


@pytest.mark.parametrize(
    "scope", ["{url}//.default", "{url}", "https://other.operations.dynamics.com/.default", "{url}/user_impersonation"]
)
def test_invalid_scope(env: Env, scope: str) -> None:
    resp = env.http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": SECRET,
            "scope": scope.format(url=env.url),
        },
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "invalid_scope" and body["error_codes"] == [70011]
    assert body["error_description"].startswith(
        "AADSTS70011: The provided value for the input parameter 'scope' is not valid"
    )
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)


def test_invalid_client(env: Env) -> None:
    resp = env.http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": "wrong",
            "scope": f"{env.url}/.default",
        },
    )
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    unknown = env.http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "nobody",
            "client_secret": SECRET,
            "scope": f"{env.url}/.default",
        },
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"


def test_unknown_tenant(env: Env) -> None:
    resp = env.http.post(
        "/fabrikam-tenant/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": SECRET,
            "scope": f"{env.url}/.default",
        },
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"].startswith("AADSTS90002: Tenant 'fabrikam-tenant' not found")


def test_foreign_audience_token_is_rejected(env: Env) -> None:
    graph = env.token("https://graph.microsoft.com/.default")
    resp = env.http.get("/data/Currencies", headers={"Authorization": f"Bearer {graph}"})
    assert resp.status_code == 401 and resp.content == b""
    # v1 with a trailing slash on the resource: token issued, F&O rejects it (aud mismatch)
    v1 = env.http.post(
        f"/{TENANT}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": SECRET,
            "resource": env.url + "/",
        },
    )
    assert v1.status_code == 200
    assert (
        env.http.get("/data/Currencies", headers={"Authorization": f"Bearer {v1.json()['access_token']}"}).status_code
        == 401
    )


def test_expired_token(env: Env) -> None:
    # Clock-free: a token issued with a 0 s lifetime is past its "exp" the moment it exists.
    # (Switch to the sandbox clock once D365Sandbox takes one.)
    valid = {"Authorization": f"Bearer {env.token()}"}
    env.sb.config.token_lifetime_s = 0
    expired = {"Authorization": f"Bearer {env.token()}"}
    resp = env.http.get("/data/Currencies", headers=expired)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="token_expired"'
    assert env.http.get("/data/Currencies", headers=valid).status_code == 200  # only the expired one is refused


def test_revoked_token(env: Env) -> None:
    assert env.get("/data/Currencies").status_code == 200
    assert env.http.post("/_sandbox/tokens/revoke").status_code == 204
    assert env.get("/data/Currencies").status_code == 401
    env._token = None
    assert env.get("/data/Currencies").status_code == 200
    env.sb.revoke_tokens()
    assert env.get("/data/Currencies").status_code == 401


def test_tokens_revoked_every_n_requests_by_the_fault_config(env: Env) -> None:
    from coupa_d365_pipeline.sandbox.faults import FaultConfig

    assert env.get("/data/Currencies").status_code == 200  # request 1 (the token request was 0 since configure)
    env.sb.injector.configure(FaultConfig(revoke_tokens_every=3))
    assert [env.get("/data/Currencies").status_code for _ in range(2)] == [200, 200]
    assert env.get("/data/Currencies").status_code == 401  # the 3rd request revoked every token first
    env._token = None
    assert env.get("/data/Currencies").status_code == 200  # request 4 is the new token, 5 uses it
    assert env.get("/data/Currencies").status_code == 401  # request 6 revoked it
    logged = [e.injected for e in env.sb.log.snapshot()][-6:]
    assert logged == [None, None, "revoke", None, None, "revoke"]


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------


def test_cross_company_semantics(env: Env) -> None:
    default = env.get("/data/VendorsV2").json()
    assert default["@odata.context"] == f"{env.url}/data/$metadata#VendorsV2"
    assert [v["VendorAccountNumber"] for v in default["value"]] == ["DAT-001"]
    # the filter naming another company does not escape the default company without cross-company
    assert env.get("/data/VendorsV2", **{"$filter": "dataAreaId eq 'usmf'"}).json()["value"] == []
    usmf = env.get("/data/VendorsV2", **{"$filter": "dataAreaId eq 'usmf'", "cross-company": "true"}).json()["value"]
    assert sorted(v["VendorAccountNumber"] for v in usmf) == ["US-101", "US-102"]
    assert len(env.get("/data/VendorsV2", **{"cross-company": "true"}).json()["value"]) == 3
    # records carry etags and every property with F&O defaults
    rec = usmf[0]
    assert rec["@odata.etag"].startswith('W/"')
    assert rec["VendorSearchName"] == "" and rec["VendorHoldReleaseDate"] == "1900-01-01T12:00:00Z"
    # by key: another company needs cross-company=true
    path = "/data/VendorsV2(dataAreaId='usmf',VendorAccountNumber='US-101')"
    assert env.get(path).status_code == 404
    one = env.get(path, **{"cross-company": "true"})
    assert one.status_code == 200 and one.json()["VendorOrganizationName"] == "O'Brien Supplies"
    assert one.json()["@odata.context"].endswith("#VendorsV2/$entity")
    assert env.get("/data/VendorsV2(dataAreaId='dat',VendorAccountNumber='DAT-001')").status_code == 200
    # non company-scoped sets are always fully visible
    assert len(env.get("/data/MainAccounts").json()["value"]) == 2


def test_filter_operators_over_http(env: Env) -> None:
    def accounts(flt: str) -> list[str]:
        resp = env.get("/data/VendorsV2", **{"$filter": flt, "cross-company": "true"})
        assert resp.status_code == 200, resp.text
        return sorted(v["VendorAccountNumber"] for v in resp.json()["value"])

    assert accounts("VendorOrganizationName eq 'O''Brien Supplies'") == ["US-101"]
    assert accounts("VendorOrganizationName eq '*brien*'") == ["US-101"]
    assert accounts("VendorOrganizationName eq 'Fab*'") == ["US-102"]
    assert accounts("VendorAccountNumber ne 'US-101' and dataAreaId eq 'usmf'") == ["US-102"]
    assert accounts("VendorAccountNumber gt 'US-101'") == ["US-102"]
    assert accounts("VendorAccountNumber ge 'US-101'") == ["US-101", "US-102"]
    assert accounts("VendorAccountNumber lt 'US'") == ["DAT-001"]
    assert accounts("VendorAccountNumber le 'US-101'") == ["DAT-001", "US-101"]
    assert accounts("not (dataAreaId eq 'usmf') or CurrencyCode eq 'EUR'") == ["DAT-001", "US-102"]
    assert accounts("(CurrencyCode eq 'USD' or CurrencyCode eq 'EUR') and dataAreaId eq 'usmf'") == ["US-101", "US-102"]
    assert accounts("OnHoldStatus eq Microsoft.Dynamics.DataEntities.CustVendorBlocked'No'") == [
        "DAT-001",
        "US-101",
        "US-102",
    ]
    assert accounts("VendorHoldReleaseDate lt 2000-01-01T00:00:00Z") == ["DAT-001", "US-101", "US-102"]
    assert accounts("VendorHoldReleaseDate gt 2000-01-01T00:00:00Z") == []
    terms = env.get(
        "/data/PaymentTerms",
        **{"$filter": "NumberOfDays ge 30 and NumberOfDays le -1 or NumberOfDays eq 30", "cross-company": "true"},
    ).json()["value"]
    assert [t["Name"] for t in terms] == ["Net30"]
    bad = env.get("/data/VendorsV2", **{"$filter": "Nope eq 'x'"})
    assert bad.status_code == 400
    assert inner(bad) == "Could not find a property named 'Nope' on type 'Microsoft.Dynamics.DataEntities.VendorV2'."
    has = env.get(
        "/data/VendorsV2", **{"$filter": "OnHoldStatus has Microsoft.Dynamics.DataEntities.CustVendorBlocked'No'"}
    )
    assert has.status_code == 400 and "not supported" in inner(has)
    syntax = env.get("/data/VendorsV2", **{"$filter": "VendorAccountNumber eq 'x"})
    assert syntax.status_code == 400 and "Unterminated string literal" in inner(syntax)


def test_select_top_skip_count_orderby(env: Env) -> None:
    resp = env.get(
        "/data/VendorsV2",
        **{
            "cross-company": "true",
            "$select": "VendorAccountNumber,dataAreaId",
            "$orderby": "VendorAccountNumber desc",
            "$top": "2",
            "$skip": "0",
            "$count": "true",
        },
    )
    body = resp.json()
    assert body["@odata.count"] == 3
    assert body["@odata.context"].endswith("#VendorsV2(VendorAccountNumber,dataAreaId)")
    assert [set(r) for r in body["value"]] == [{"@odata.etag", "VendorAccountNumber", "dataAreaId"}] * 2
    assert [r["VendorAccountNumber"] for r in body["value"]] == ["US-102", "US-101"]
    skipped = env.get(
        "/data/VendorsV2",
        **{
            "cross-company": "true",
            "$orderby": "dataAreaId asc,VendorAccountNumber desc",
            "$skip": "1",
            "$select": "VendorAccountNumber",
        },
    ).json()["value"]
    assert [r["VendorAccountNumber"] for r in skipped] == ["US-102", "US-101"]
    bad_select = env.get("/data/VendorsV2", **{"$select": "VendorName"})
    assert bad_select.status_code == 400 and "VendorName" in inner(bad_select)
    assert env.get("/data/VendorsV2", **{"$orderby": "Nope desc"}).status_code == 400
    assert env.get("/data/VendorsV2", **{"$top": "-1"}).status_code == 400
    assert env.get("/data/VendorsV2", **{"$expand": "VendorGroup"}).status_code == 400
    count = env.get("/data/VendorsV2/$count", **{"cross-company": "true"})
    assert count.status_code == 200 and count.text == "3"


def test_next_link_paging_returns_every_row_once() -> None:
    e, server = start(page_size=3)
    try:
        e.sb.state.load("Currencies", [{"CurrencyCode": f"C{i:02d}"} for i in range(20)])
        seen: list[str] = []
        url: str | None = f"{e.url}/data/Currencies?$count=true&$orderby=CurrencyCode&$filter=CurrencyCode ne 'USD'"
        pages = 0
        while url:
            body = e.http.get(url, headers=e.headers()).json()
            assert body["@odata.count"] == 21
            assert len(body["value"]) <= 3
            seen += [r["CurrencyCode"] for r in body["value"]]
            url = body.get("@odata.nextLink")
            if url:
                assert url.startswith(f"{e.url}/data/Currencies?") and "%24filter" not in url and "$skip=" in url
            pages += 1
        assert pages == 7
        assert seen == sorted(seen) and len(seen) == len(set(seen)) == 21 and "USD" not in seen
        # $top is honoured across pages
        body = e.get("/data/Currencies", **{"$top": "5"}).json()
        assert len(body["value"]) == 3 and "$top=2" in body["@odata.nextLink"]
        rest = e.http.get(body["@odata.nextLink"], headers=e.headers()).json()
        assert len(rest["value"]) == 2 and "@odata.nextLink" not in rest
    finally:
        e.http.close()
        server.stop()


def test_unknown_entity_set_and_key_errors(env: Env) -> None:
    resp = env.get("/data/VendorsV9")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {
            "code": "",
            "message": "An error has occurred.",
            "innererror": {"message": "Resource not found for the segment 'VendorsV9'.", "type": "", "stacktrace": ""},
        }
    }
    missing = env.get("/data/VendorsV2(VendorAccountNumber='US-101')", **{"cross-company": "true"})
    assert missing.status_code == 400
    assert inner(missing) == (
        "The number of keys specified in the URI does not match number of key properties for "
        "the resource 'Microsoft.Dynamics.DataEntities.VendorV2'."
    )
    extra = env.get("/data/Currencies(CurrencyCode='USD',X='1')")
    assert extra.status_code == 400 and "number of keys" in inner(extra)
    nf = env.get("/data/VendorsV2(dataAreaId='usmf',VendorAccountNumber='NOPE')", **{"cross-company": "true"})
    assert nf.status_code == 404 and "Resource not found" in inner(nf)
    # single-key shorthand, and quotes/escapes in keys
    assert env.get("/data/Currencies('USD')").json()["CurrencyCode"] == "USD"


# ---------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------


def test_by_key_get_patch_delete(env: Env) -> None:
    ref = create_invoice(env, lines=1)
    path = f"/data/VendorInvoiceHeaders(dataAreaId='usmf',HeaderReference='{ref}')"
    got = env.get(path, **{"cross-company": "true"})
    assert got.status_code == 200 and got.json()["InvoiceNumber"] == "COUPA-INV-1"
    etag = got.headers["etag"]
    patched = env.http.patch(
        path, params={"cross-company": "true"}, json={"InvoiceDescription": "changed"}, headers=env.headers()
    )
    assert patched.status_code == 204 and patched.content == b""
    again = env.get(path, **{"cross-company": "true"}).json()
    assert again["InvoiceDescription"] == "changed" and again["@odata.etag"] != etag
    stale = env.http.patch(
        path,
        params={"cross-company": "true"},
        json={"InvoiceDescription": "x"},
        headers={**env.headers(), "If-Match": etag},
    )
    assert stale.status_code == 412
    key_change = env.http.patch(
        path, params={"cross-company": "true"}, json={"HeaderReference": "OTHER"}, headers=env.headers()
    )
    assert key_change.status_code == 400
    bad_fk = env.http.patch(
        path, params={"cross-company": "true"}, json={"InvoiceAccount": "NOPE"}, headers=env.headers()
    )
    assert bad_fk.status_code == 500 and "'NOPE' in field 'Invoice account'" in inner(bad_fk)
    deleted = env.http.delete(path, params={"cross-company": "true"}, headers=env.headers())
    assert deleted.status_code == 204
    assert env.get(path, **{"cross-company": "true"}).status_code == 404
    # cascade: the line is gone too
    assert env.sb.state.find("VendorInvoiceLines", HeaderReference=ref) == []


def test_post_returns_201_with_headers_and_number_sequence(env: Env) -> None:
    resp = env.post(
        "/data/VendorInvoiceHeaders", {"@odata.type": "#Microsoft.Dynamics.DataEntities.VendorInvoiceHeader", **HEADER}
    )
    assert resp.status_code == 201
    body = resp.json()
    ref = body["HeaderReference"]
    assert re.fullmatch(r"APINV-\d{6}", ref)
    assert resp.headers["location"] == f"{env.url}/data/VendorInvoiceHeaders(dataAreaId='usmf',HeaderReference='{ref}')"
    assert resp.headers["etag"] == body["@odata.etag"]
    assert body["@odata.context"] == f"{env.url}/data/$metadata#VendorInvoiceHeaders/$entity"
    assert body["ImportedAmount"] == 150 and body["DueDate"] == "1900-01-01T12:00:00Z" and body["IsOnHold"] == "No"
    second = env.post("/data/VendorInvoiceHeaders", {**HEADER, "InvoiceNumber": "COUPA-INV-2"}).json()
    assert second["HeaderReference"] != ref
    # manual numbers are allowed; a missing dataAreaId means the default company
    manual = env.post("/data/VendorInvoiceHeaders", {**HEADER, "HeaderReference": "COUPA-H-1", "InvoiceNumber": "X1"})
    assert manual.status_code == 201 and manual.json()["HeaderReference"] == "COUPA-H-1"
    dflt = env.post("/data/VendorInvoiceHeaders", {"InvoiceNumber": "D1", "InvoiceAccount": "DAT-001"})
    assert dflt.status_code == 201 and dflt.json()["dataAreaId"] == "dat"
    upper = env.post("/data/VendorInvoiceHeaders", {**HEADER, "dataAreaId": "USMF", "InvoiceNumber": "U1"})
    assert upper.json()["dataAreaId"] == "usmf"


def test_unknown_property_and_bad_types_are_400(env: Env) -> None:
    resp = env.post("/data/VendorInvoiceHeaders", {**HEADER, "VendorNam": "x"})
    assert resp.status_code == 400
    assert resp.json() == {
        "error": {
            "code": "",
            "message": "An error has occurred.",
            "innererror": {
                "message": "The property 'VendorNam' does not exist "
                "on type 'Microsoft.Dynamics.DataEntities.VendorInvoiceHeader'. "
                "Make sure to only use property names that are defined by the type or mark the type as open type.",
                "type": "Microsoft.OData.ODataException",
                "stacktrace": "",
            },
        }
    }
    wrong_type = env.post("/data/VendorInvoiceHeaders", {**HEADER, "ImportedAmount": "lots"})
    assert wrong_type.status_code == 400 and "Edm.Decimal" in inner(wrong_type)
    enum = env.post("/data/VendorInvoiceHeaders", {**HEADER, "IsOnHold": "Maybe"})
    assert enum.status_code == 400 and "Maybe" in inner(enum)
    date = env.post("/data/VendorInvoiceHeaders", {**HEADER, "InvoiceDate": "15/01/2026"})
    assert date.status_code == 400 and "Edm.DateTimeOffset" in inner(date)
    null = env.post("/data/VendorInvoiceHeaders", {**HEADER, "ImportedAmount": None})
    assert null.status_code == 400 and "does not allow null values" in inner(null)
    assert env.sb.state.records("VendorInvoiceHeaders") == []


def test_duplicate_key_is_500(env: Env) -> None:
    body = {**HEADER, "HeaderReference": "COUPA-H-9"}
    assert env.post("/data/VendorInvoiceHeaders", body).status_code == 201
    dup = env.post("/data/VendorInvoiceHeaders", {**body, "HeaderReference": "coupa-h-9"})
    assert dup.status_code == 500
    err = dup.json()["error"]
    assert err["message"] == "An error has occurred."
    assert err["innererror"]["type"] == "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
    assert err["innererror"]["message"].startswith(
        "Write failed for table row of type 'VendorInvoiceHeaderEntity'. Infolog: Info: Cannot create a record in "
        "Pending vendor invoices (VendInvoiceInfoTable)."
    )
    assert err["innererror"]["message"].endswith("\nThe record already exists..")
    vendor_dup = env.post(
        "/data/VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101", "VendorGroupId": "10"}
    )
    assert vendor_dup.status_code == 500 and "Vendors (VendTable)" in inner(vendor_dup)
    assert "The record already exists.." in inner(vendor_dup)


def test_foreign_key_failures(env: Env) -> None:
    vendor = env.post("/data/VendorInvoiceHeaders", {**HEADER, "InvoiceAccount": "US-999"})
    assert vendor.status_code == 500
    assert inner(vendor) == (
        "Write failed for table row of type 'VendorInvoiceHeaderEntity'. Infolog: Warning: The value 'US-999' in field "
        "'Invoice account' is not found in the related table 'Vendors'.; Warning: validateField failed on field "
        "'VendorInvoiceHeaderEntity.InvoiceAccount'."
    )
    # a vendor of another company is not good enough
    other_company = env.post("/data/VendorInvoiceHeaders", {**HEADER, "InvoiceAccount": "DAT-001"})
    assert other_company.status_code == 500
    company = env.post("/data/VendorInvoiceHeaders", {**HEADER, "dataAreaId": "zzz"})
    assert company.status_code == 500 and "Company 'zzz' does not exist" in inner(company)
    no_number = env.post("/data/VendorInvoiceHeaders", {**HEADER, "InvoiceNumber": ""})
    assert no_number.status_code == 500 and "must be filled in" in inner(no_number)
    group = env.post("/data/VendorsV2", {"dataAreaId": "usmf", "VendorGroupId": "99"})
    assert (
        group.status_code == 500
        and "'99' in field 'Group' is not found in the related table 'Vendor groups'" in inner(group)
    )
    assert "VendVendorV2Entity.VendorGroupId" in inner(group)
    new_vendor = env.post(
        "/data/VendorsV2",
        {"dataAreaId": "usmf", "VendorGroupId": "10", "CurrencyCode": "USD", "DefaultPaymentTermsName": "Net30"},
    )
    assert new_vendor.status_code == 201 and new_vendor.json()["VendorAccountNumber"].startswith("V-")

    ref = env.post("/data/VendorInvoiceHeaders", HEADER).json()["HeaderReference"]
    base = {
        "dataAreaId": "usmf",
        "HeaderReference": ref,
        "InvoiceLineNumber": 1,
        "Amount": 10,
        "MainAccountDisplayValue": "600150",
    }
    item = env.post("/data/VendorInvoiceLines", {**base, "ItemNumber": "NOPE"})
    assert item.status_code == 500
    assert "The value 'NOPE' in field 'Item number' is not found in the related table 'Released products'." in inner(
        item
    )
    assert inner(item).startswith("Write failed for table row of type 'VendorInvoiceLineEntity'.")
    account = env.post("/data/VendorInvoiceLines", {**base, "MainAccountDisplayValue": "600160"})  # not in usmf
    assert account.status_code == 500
    assert "The value '600160' in field 'Main account' is not found in the related table 'Main accounts'." in inner(
        account
    )
    dim = env.post("/data/VendorInvoiceLines", {**base, "DimensionDisplayValue": "001-CC-10-022"})  # unescaped
    assert dim.status_code == 500
    assert (
        "The value 'CC' in field 'CostCenter' is not found in the related table 'Financial dimension values'."
        in inner(dim)
    )
    po_line = env.post("/data/VendorInvoiceLines", {**base, "PurchaseOrder": "PO-EX-1", "PurchLineNumber": 7})
    assert po_line.status_code == 500 and "Purchase order lines" in inner(po_line)
    ok = env.post(
        "/data/VendorInvoiceLines",
        {
            **base,
            "DimensionDisplayValue": "001-CC\\-10-022",
            "PurchaseOrder": "PO-EX-1",
            "PurchLineNumber": 1,
            "ItemNumber": "d0001",
        },
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["DimensionDisplayValue"] == "001-CC\\-10-022"
    empty_segments = env.post(
        "/data/VendorInvoiceLines", {**base, "InvoiceLineNumber": 2, "DimensionDisplayValue": "-CC\\-10-"}
    )
    assert empty_segments.status_code == 201
    missing_key = env.post("/data/VendorInvoiceLines", {k: v for k, v in base.items() if k != "InvoiceLineNumber"})
    assert missing_key.status_code == 500 and "must be filled in" in inner(missing_key)
    po = env.post("/data/PurchaseOrderHeadersV2", {"dataAreaId": "usmf", "OrderVendorAccountNumber": "US-404"})
    assert po.status_code == 500 and "PurchPurchaseOrderHeaderV2Entity" in inner(po)
    po_ok = env.post(
        "/data/PurchaseOrderHeadersV2",
        {"dataAreaId": "usmf", "OrderVendorAccountNumber": "US-101", "CurrencyCode": "USD"},
    )
    assert po_ok.status_code == 201 and po_ok.json()["PurchaseOrderNumber"] == "PO-000001"
    unit = env.post(
        "/data/PurchaseOrderLinesV2",
        {
            "dataAreaId": "usmf",
            "PurchaseOrderNumber": "PO-000001",
            "LineNumber": 1,
            "ItemNumber": "D0001",
            "PurchaseUnitSymbol": "box",
        },
    )
    assert unit.status_code == 500 and "'box' in field 'Unit'" in inner(unit)


def test_line_without_header_is_rejected(env: Env) -> None:
    resp = env.post(
        "/data/VendorInvoiceLines",
        {"dataAreaId": "usmf", "HeaderReference": "NOPE", "InvoiceLineNumber": 1, "Amount": 1},
    )
    assert resp.status_code == 500
    assert (
        "The value 'NOPE' in field 'Header reference' is not found in the related table 'Pending vendor invoices'."
        in inner(resp)
    )
    assert env.sb.state.records("VendorInvoiceLines") == []


def test_split_display_value() -> None:
    assert split_display_value("001-CC\\-10-022") == ["001", "CC-10", "022"]
    assert split_display_value("001--") == ["001", "", ""]
    assert split_display_value("") == [""]


# ---------------------------------------------------------------------------------------------
# Posting and payment (test hooks)
# ---------------------------------------------------------------------------------------------


def test_posting_moves_invoice_to_bi_entities(env: Env) -> None:
    ref = create_invoice(env, "COUPA-INV-7", lines=2)
    resp = env.http.post("/_sandbox/d365/post_invoice", json={"dataAreaId": "usmf", "HeaderReference": ref})
    assert resp.status_code == 200, resp.text
    assert env.sb.state.records("VendorInvoiceHeaders") == [] and env.sb.state.records("VendorInvoiceLines") == []
    path = f"/data/VendorInvoiceHeaders(dataAreaId='usmf',HeaderReference='{ref}')"
    assert env.get(path, **{"cross-company": "true"}).status_code == 404
    patch = env.http.patch(
        path, params={"cross-company": "true"}, json={"InvoiceDescription": "late"}, headers=env.headers()
    )
    assert patch.status_code == 404
    assert env.http.delete(path, params={"cross-company": "true"}, headers=env.headers()).status_code == 404
    assert env.sb.state.is_posted("usmf", ref)

    journal = env.get(
        "/data/VendInvoiceJourBiEntities",
        **{
            "cross-company": "true",
            "$filter": "dataAreaId eq 'usmf' and InvoiceAccount eq 'US-101' and InvoiceId eq 'COUPA-INV-7'",
            "$select": "InvoiceId,InvoiceAccount,InvoiceDate,InvoiceAmount,CurrencyCode,LedgerVoucher",
        },
    ).json()["value"]
    assert len(journal) == 1
    assert journal[0]["InvoiceAmount"] == 150 and journal[0]["CurrencyCode"] == "USD"
    assert journal[0]["InvoiceDate"] == "2026-01-15T12:00:00Z"
    voucher = journal[0]["LedgerVoucher"]
    trans = env.get(
        "/data/VendTransBiEntities",
        **{
            "cross-company": "true",
            "$filter": f"AccountNum eq 'US-101' and Invoice eq 'COUPA-INV-7' and Voucher eq '{voucher}'",
        },
    ).json()["value"]
    assert len(trans) == 1
    assert trans[0]["AmountCur"] == -150 and trans[0]["SettleAmountCur"] == 0 and trans[0]["TransType"] == "Purch"
    assert trans[0]["Closed"] == "1900-01-01T12:00:00Z"
    # posting something that is not pending
    assert (
        env.http.post("/_sandbox/d365/post_invoice", json={"dataAreaId": "usmf", "HeaderReference": ref}).status_code
        == 404
    )


def test_settlement_updates_vend_trans(env: Env) -> None:
    create_invoice(env, "COUPA-INV-8", lines=2)
    ref = env.sb.state.find("VendorInvoiceHeaders", InvoiceNumber="COUPA-INV-8")[0]["HeaderReference"]
    env.sb.state.post_invoice("usmf", ref)
    part = env.http.post(
        "/_sandbox/d365/settle",
        json={
            "dataAreaId": "usmf",
            "InvoiceId": "COUPA-INV-8",
            "VendorAccount": "US-101",
            "Amount": 100,
            "Date": "2026-02-01",
            "PaymentReference": "CHK-1",
        },
    )
    assert part.status_code == 200, part.text
    inv = env.get(
        "/data/VendTransBiEntities", **{"cross-company": "true", "$filter": "Invoice eq 'COUPA-INV-8'"}
    ).json()["value"][0]
    assert inv["SettleAmountCur"] == -100 and inv["Closed"] == "1900-01-01T12:00:00Z"
    assert inv["LastSettleDate"] == "2026-02-01T12:00:00Z"
    first_voucher = inv["LastSettleVoucher"]
    assert first_voucher.startswith("APPAY-")
    env.sb.state.settle_invoice("usmf", "COUPA-INV-8", "US-101", Decimal("50"), "2026-02-03T00:00:00Z", "CHK-2")
    inv = env.get(
        "/data/VendTransBiEntities", **{"cross-company": "true", "$filter": "Invoice eq 'COUPA-INV-8'"}
    ).json()["value"][0]
    assert inv["SettleAmountCur"] == -150 and abs(inv["SettleAmountCur"]) == abs(inv["AmountCur"])
    assert inv["Closed"] == "2026-02-03T00:00:00Z" and inv["LastSettleVoucher"] != first_voucher
    payments = env.get(
        "/data/VendTransBiEntities",
        **{
            "cross-company": "true",
            "$filter": "TransType eq Microsoft.Dynamics.DataEntities.LedgerTransType'Payment'",
            "$orderby": "TransDate",
        },
    ).json()["value"]
    assert [(p["AmountCur"], p["PaymReference"]) for p in payments] == [(100, "CHK-1"), (50, "CHK-2")]
    settlements = env.get("/data/VendSettlementBiEntities", **{"cross-company": "true"}).json()["value"]
    assert [s["SettleAmountCur"] for s in settlements] == [-100, -50]
    assert {s["TransRecId"] for s in settlements} == {inv["SourceKey"]}
    assert settlements[0]["OffsetTransVoucher"] == first_voucher and settlements[0]["TransCompany"] == "usmf"
    over = env.http.post(
        "/_sandbox/d365/settle",
        json={
            "dataAreaId": "usmf",
            "InvoiceId": "COUPA-INV-8",
            "VendorAccount": "US-101",
            "Amount": 1,
            "Date": "2026-02-04",
        },
    )
    assert over.status_code == 400


# ---------------------------------------------------------------------------------------------
# $batch and throttling
# ---------------------------------------------------------------------------------------------


def batch_body(
    env: Env, header_ref: str, lines: list[dict], boundary: str = "batch_b1", changeset: str = "changeset_c1"
) -> str:
    parts = []
    requests = [
        (
            "VendorInvoiceHeaders",
            {
                "@odata.type": "#Microsoft.Dynamics.DataEntities.VendorInvoiceHeader",
                **HEADER,
                "HeaderReference": header_ref,
            },
        )
    ]
    requests += [("VendorInvoiceLines", line) for line in lines]
    for n, (entity_set, body) in enumerate(requests, start=1):
        parts.append(
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: {n}\r\n\r\nPOST {env.url}/data/{entity_set} HTTP/1.1\r\nOData-Version: 4.0\r\n"
            f"Content-Type: application/json;odata.metadata=minimal\r\n\r\n{json.dumps(body)}\r\n"
        )
    get_part = (
        f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"GET /data/Currencies('USD') HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n"
    )
    return (
        f"--{boundary}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
        + "".join(parts)
        + f"--{changeset}--\r\n"
        + get_part
        + f"--{boundary}--\r\n"
    )


def post_batch(env: Env, body: str, boundary: str = "batch_b1") -> httpx.Response:
    return env.http.post(
        "/data/$batch",
        content=body.encode(),
        headers={**env.headers(), "Content-Type": f"multipart/mixed; boundary={boundary}", "Accept": "multipart/mixed"},
    )


def line(ref: str, n: int, **extra: Any) -> dict:
    return {
        "dataAreaId": "usmf",
        "HeaderReference": ref,
        "InvoiceLineNumber": n,
        "Amount": 10 * n,
        "MainAccountDisplayValue": "600150",
        **extra,
    }


def test_batch_changeset_success(env: Env) -> None:
    resp = post_batch(env, batch_body(env, "BATCH-1", [line("BATCH-1", 1), line("BATCH-1", 2)]))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    text = resp.text
    statuses = re.findall(r"Content-ID: (\d+)\r\n\r\nHTTP/1.1 (\d{3})", text)
    assert statuses == [("1", "201"), ("2", "201"), ("3", "201")]
    assert text.count("Location: ") == 3 and text.count("ETag: W/") >= 3
    assert "changesetresponse_" in text
    assert "HTTP/1.1 200 OK" in text and '"CurrencyCode": "USD"' in text  # the plain GET part
    assert len(env.sb.state.find("VendorInvoiceLines", HeaderReference="BATCH-1")) == 2


def test_batch_failing_changeset_is_rolled_back(env: Env) -> None:
    body = batch_body(env, "BATCH-2", [line("BATCH-2", 1), line("BATCH-2", 2, ItemNumber="NOPE")])
    resp = post_batch(env, body)
    assert resp.status_code == 200
    text = resp.text
    assert re.findall(r"Content-ID: (\d+)\r\n\r\nHTTP/1.1 (\d{3})", text) == [("3", "500")]
    assert "HTTP/1.1 500 Internal Server Error" in text
    payload = json.loads(
        text.split("HTTP/1.1 500 Internal Server Error", 1)[1].split("\r\n\r\n", 1)[1].split("\r\n--")[0]
    )
    assert "The value 'NOPE' in field 'Item number'" in payload["error"]["innererror"]["message"]
    assert env.sb.state.find("VendorInvoiceHeaders", HeaderReference="BATCH-2") == []
    assert env.sb.state.find("VendorInvoiceLines", HeaderReference="BATCH-2") == []
    # number sequences and state are untouched: a follow-up auto-numbered header still gets APINV-000001
    assert env.post("/data/VendorInvoiceHeaders", HEADER).json()["HeaderReference"] == "APINV-000001"
    # the GET outside the changeset still ran
    assert "HTTP/1.1 200 OK" in text


def test_batch_duplicate_in_changeset(env: Env) -> None:
    resp = post_batch(env, batch_body(env, "BATCH-3", [line("BATCH-3", 1), line("BATCH-3", 1)]))
    assert resp.status_code == 200
    assert re.findall(r"Content-ID: (\d+)\r\n\r\nHTTP/1.1 (\d{3})", resp.text) == [("3", "500")]
    assert "The record already exists.." in resp.text.replace("\\n", "\n")
    assert env.sb.state.records("VendorInvoiceHeaders") == []


def test_service_protection_429() -> None:
    e, server = start(request_budget=3, budget_window_s=60, budget_retry_after_s=7)
    try:
        for _ in range(3):
            assert e.get("/data/Currencies").status_code == 200
        throttled = e.get("/data/Currencies")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "7"
        assert throttled.json()["error"]["message"] == (
            "This request could not be processed at this time due to system experiencing high resource utilization."
        )
        # token calls do not count against the budget
        assert (
            e.http.post(
                f"/{TENANT}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT,
                    "client_secret": SECRET,
                    "scope": f"{e.url}/.default",
                },
            ).status_code
            == 200
        )
        e.sb.reset_budget()
        # a batch with 4 operations exceeds a budget of 3 as a whole
        resp = post_batch(e, batch_body(e, "B", [line("B", 1), line("B", 2)]))
        assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
        assert e.sb.state.records("VendorInvoiceHeaders") == []
        assert e.get("/data/Currencies").status_code == 200
    finally:
        e.http.close()
        server.stop()


def test_control_endpoints_and_request_log(env: Env) -> None:
    env.get("/data/Currencies")
    raw = env.http.get("/_sandbox/d365/VendorsV2").json()
    assert len(raw) == 3 and {r["dataAreaId"] for r in raw} == {"usmf", "dat"}
    assert env.http.get("/_sandbox/d365/Nope").status_code == 404
    assert env.http.post("/_sandbox/d365/Currencies", json=[{"CurrencyCode": "GBP"}]).status_code == 204
    assert "GBP" in {r["CurrencyCode"] for r in env.sb.state.records("Currencies")}
    log = env.http.get("/_sandbox/requests").json()
    assert [(r["method"], r["path"], r["status"]) for r in log if r["path"].startswith("/data")] == [
        ("GET", "/data/Currencies", 200)
    ]
    assert all(not r["path"].startswith("/_sandbox") for r in log)


def test_state_is_usable_directly() -> None:
    sandbox = D365Sandbox(D365SandboxConfig(environment_url="http://127.0.0.1:1"), master_data())
    state = sandbox.state
    rec, etag = state.create("VendorInvoiceHeaders", dict(HEADER))
    assert etag.startswith('W/"') and rec["HeaderReference"] == "APINV-000001"
    result = state.post_invoice("usmf", rec["HeaderReference"])
    assert result["VendTransBiEntity"]["AmountCur"] == Decimal("-150")  # no lines: ImportedAmount
    with pytest.raises(KeyError):
        state.post_invoice("usmf", rec["HeaderReference"])


def test_concurrent_changesets_are_atomic(env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def run(i: int) -> int:
        ref = f"CONC-{i}"
        bad = {"ItemNumber": "NOPE"} if i % 2 else {}
        return post_batch(env, batch_body(env, ref, [line(ref, 1), line(ref, 2, **bad)])).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(run, range(16))) == {200}
    headers = {h["HeaderReference"] for h in env.sb.state.records("VendorInvoiceHeaders")}
    assert headers == {f"CONC-{i}" for i in range(0, 16, 2)}
    lines = env.sb.state.records("VendorInvoiceLines")
    assert len(lines) == 16 and {ln["HeaderReference"] for ln in lines} == headers


def test_string_eq_is_a_wildcard_and_case_insensitive_but_key_lookups_are_exact(env: Env) -> None:
    """Issue 9: F&O reads ``*`` inside an ``eq`` literal as a wildcard and compares strings with a
    case-insensitive collation; a key predicate in the URL is an exact (case-insensitive) lookup.
    The connector's natural-key lookups rely on the sandbox behaving like that."""

    def accounts(flt: str) -> list[str]:
        resp = env.get("/data/VendorsV2", **{"$filter": flt, "cross-company": "true"})
        assert resp.status_code == 200, resp.text
        return sorted(v["VendorAccountNumber"] for v in resp.json()["value"])

    assert accounts("dataAreaId eq 'usmf' and VendorAccountNumber eq '*'") == ["US-101", "US-102"]
    assert accounts("VendorAccountNumber eq 'US*'") == ["US-101", "US-102"]
    assert accounts("VendorAccountNumber eq 'us-101'") == ["US-101"]
    # SQL LIKE characters are not wildcards in an OData literal
    assert accounts("VendorAccountNumber eq 'US-10%'") == []
    assert accounts("VendorAccountNumber eq 'US-10_'") == []

    def by_key(account: str, company: str = "usmf") -> httpx.Response:
        return env.get(
            f"/data/VendorsV2(dataAreaId='{company}',VendorAccountNumber='{account}')", **{"cross-company": "true"}
        )

    assert by_key("US-101").status_code == 200
    assert by_key("*").status_code == 404 and by_key("US*").status_code == 404
    one = by_key("us-101", "USMF")
    assert one.status_code == 200 and one.json()["VendorAccountNumber"] == "US-101"
