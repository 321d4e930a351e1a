"""Issue 9 item 2 (broken answers): an HTML, empty or truncated 200 answer from Coupa, D365 or a token
endpoint raises one error naming the system, method, URL path (never the query or a secret) and
status; a lost $batch answer is ambiguous, not a rejection (item 5). Over real HTTP, with the
sandboxes' broken-answer faults."""

import pytest

from coupa_d365_pipeline.common.http import AmbiguousWriteError, RetryPolicy, UnexpectedAnswerError
from coupa_d365_pipeline.d365.batch import BatchOperation, Changeset
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline.sandbox.launch import COUPA_CLIENT_SECRET, D365_CLIENT_SECRET
from coupa_d365_pipeline_tests.clients.fake_time import FakeClock
from coupa_d365_pipeline_tests.clients.test_d365_client import a_main_account, existing_vendor, header_body, line_body
from coupa_d365_pipeline_tests.conftest import make_coupa_client, make_d365_client


def fast(**kwargs):
    clock = FakeClock()
    return dict(retry_policy=RetryPolicy(backoff_initial_s=0.01), sleep=clock.sleep, **kwargs)


@pytest.mark.parametrize("kind", ["html", "empty", "truncated"])
def test_coupa_read_answer_that_is_not_json_names_system_method_path_status(sandboxes, kind):
    sandboxes.coupa.injector.script(ScriptedFault(kind=kind, method="GET", path_regex="^/api/invoices$", times=100))
    with make_coupa_client(sandboxes, max_requests_per_second=1000, **fast()) as client:
        with pytest.raises(UnexpectedAnswerError) as err:
            list(client.iter_records("invoices", {"status": "approved"}))
    message = str(err.value)
    assert message.startswith("Coupa GET /api/invoices answered HTTP 200 with ")
    assert ("not JSON" in message or "cut short" in message) and "COUPA_BASE_URL" in message
    assert "status" not in message.split(" answered")[0] and "approved" not in message  # no query values
    if kind == "html":
        assert "text/html" in message and "<html>" in message
    assert err.value.system == "Coupa" and err.value.status == 200 and err.value.path == "/api/invoices"


def test_a_single_broken_read_answer_is_retried(sandboxes):
    sandboxes.coupa.injector.script(ScriptedFault(kind="html", method="GET", path_regex="^/api/suppliers$"))
    with make_coupa_client(sandboxes, max_requests_per_second=1000, **fast()) as client:
        assert list(client.iter_records("suppliers"))


@pytest.mark.parametrize("kind", ["html", "truncated", "empty"])
def test_token_endpoint_answer_that_is_not_json_never_shows_its_body(sandboxes, kind):
    sandboxes.coupa.injector.script(ScriptedFault(kind=kind, path_regex="^/oauth2/token$", times=100))
    sandboxes.d365.injector.script(ScriptedFault(kind=kind, path_regex="/oauth2/v2.0/token$", times=100))
    with make_coupa_client(sandboxes, **fast()) as coupa, make_d365_client(sandboxes, **fast()) as d365:
        with pytest.raises(UnexpectedAnswerError) as coupa_err:
            coupa.get("suppliers", 1)
        with pytest.raises(UnexpectedAnswerError) as d365_err:
            d365.get("VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "X"})
    assert str(coupa_err.value).startswith("Coupa POST /oauth2/token answered HTTP 200")
    assert str(d365_err.value).startswith("D365 POST /contoso-tenant/oauth2/v2.0/token answered HTTP 200")
    for err in (coupa_err, d365_err):
        text = str(err.value)
        assert "first bytes" not in text and "access_token" not in text  # a token answer is never echoed
        assert COUPA_CLIENT_SECRET not in text and D365_CLIENT_SECRET not in text


@pytest.mark.parametrize("kind", ["html", "empty", "truncated"])
def test_d365_read_answer_that_is_not_json(sandboxes, kind):
    sandboxes.d365.injector.script(ScriptedFault(kind=kind, method="GET", path_regex="^/data/VendorsV2$", times=100))
    with make_d365_client(sandboxes, **fast()) as d365:
        with pytest.raises(UnexpectedAnswerError) as err:
            list(d365.query("VendorsV2", legal_entity="usmf", top=5))
    message = str(err.value)
    assert message.startswith("D365 GET /data/VendorsV2 answered HTTP 200 with ") and "D365_BASE_URL" in message
    assert "usmf" not in message and "cross-company" not in message


@pytest.mark.parametrize("kind", ["truncated", "empty_after", "html_after"])
def test_lost_batch_answer_after_d365_applied_it_is_ambiguous_not_a_rejection(sandboxes, kind):
    vendor = existing_vendor(sandboxes)
    account = a_main_account(sandboxes)
    sandboxes.d365.injector.script(ScriptedFault(kind=kind, method="POST", path_regex=r"^/data/\$batch$"))
    with make_d365_client(sandboxes, **fast()) as d365:
        with pytest.raises(AmbiguousWriteError) as err:
            d365.batch(
                [
                    Changeset(
                        [
                            BatchOperation(
                                "POST",
                                "VendorInvoiceHeaders",
                                dict(header_body(vendor, f"LOST-{kind}"), HeaderReference=f"L-{kind}"),
                            ),
                            BatchOperation("POST", "VendorInvoiceLines", line_body(f"L-{kind}", 1, account)),
                        ]
                    )
                ]
            )
    assert "D365 POST /data/$batch" in str(err.value)
    # it was applied: only a lookup can tell, never a "changeset failed"
    assert sandboxes.d365.state.get("VendorInvoiceHeaders", {"dataAreaId": "usmf", "HeaderReference": f"L-{kind}"})


def test_created_record_whose_answer_is_lost_is_found_by_the_lookup(sandboxes):
    vendor = existing_vendor(sandboxes)
    sandboxes.d365.injector.script(
        ScriptedFault(kind="truncated", method="POST", path_regex="^/data/VendorInvoiceHeaders$")
    )
    key = {"dataAreaId": "usmf", "HeaderReference": "TRUNC-1"}
    with make_d365_client(sandboxes, **fast()) as d365:
        created = d365.create(
            "VendorInvoiceHeaders",
            dict(header_body(vendor, "TRUNC-1"), HeaderReference="TRUNC-1"),
            verify=lambda: d365.get("VendorInvoiceHeaders", key),
        )
    assert created["HeaderReference"] == "TRUNC-1"
    posts = [e for e in sandboxes.d365.log.snapshot() if e.method == "POST" and e.path == "/data/VendorInvoiceHeaders"]
    assert len(posts) == 1
