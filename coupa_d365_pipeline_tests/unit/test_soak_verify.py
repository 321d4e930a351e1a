"""The soak's end-state comparison finds what it must: missing, duplicated, wrongly-amounted and
unexpected invoices, and payments missing, duplicated or unexplained in Coupa (so a soak report of 0
means something)."""

from decimal import Decimal

from coupa_d365_pipeline.soak.verify import APWork, Payment, compare
from coupa_d365_pipeline_tests.flow.helpers import CHARTS, approved


def header(sandboxes, invoice, number: str | None = None, amount: str | None = None, ref: str | None = None) -> dict:
    supplier = next(s for s in sandboxes.seed.coupa_suppliers if s["id"] == invoice["supplier"]["id"])
    return {
        "dataAreaId": CHARTS[invoice["account-type"]["name"]],
        "HeaderReference": ref or f"COUPA-{invoice['id']}",
        "InvoiceAccount": supplier["number"],
        "InvoiceNumber": number or invoice["invoice-number"],
        "Currency": invoice["currency"]["code"],
        "ImportedAmount": amount or invoice["gross-total"],
    }


def test_compare_counts_missing_duplicate_amount_and_unexpected_invoices(sandboxes):
    unmappable = set(sandboxes.seed.expectations["unmappable_invoices"])
    bookable = [i for i in approved(sandboxes.seed) if i["id"] not in unmappable and not i["invoice-lines"][1:]]
    first, second = bookable[0], bookable[1]
    end = compare(sandboxes, None, set())
    assert end.invoices_expected == len([i for i in approved(sandboxes.seed) if i["id"] not in unmappable])
    assert end.invoices_missing == end.invoices_expected and end.invoices_booked == 0

    d365 = sandboxes.d365.state
    d365.load("VendorInvoiceHeaders", [header(sandboxes, first), header(sandboxes, first, ref="COUPA-DUP")])
    wrong = str(Decimal(second["gross-total"]) + Decimal("0.01"))
    d365.load("VendorInvoiceHeaders", [header(sandboxes, second, amount=wrong)])
    d365.load("VendorInvoiceHeaders", [header(sandboxes, second, number="NOT-IN-COUPA", ref="COUPA-X")])
    end = compare(sandboxes, None, set())
    assert end.invoices_booked == 2 and end.invoices_missing == end.invoices_expected - 2
    assert end.invoice_duplicates == 1 and end.invoice_amount_differences == 1 and end.invoices_unexpected == 1
    assert end.invoice_line_differences == 2  # no lines were loaded for either


def test_compare_counts_missing_duplicate_and_unexplained_payments(sandboxes):
    invoice = approved(sandboxes.seed)[0]
    made = [
        Payment(invoice["id"], "SOAK-PAY-00000-A", Decimal("10.00")),
        Payment(invoice["id"], "SOAK-PAY-1", Decimal(1)),
    ]
    paid = {"amount-paid": "10.00", "notes": "SOAK-PAY-00000-A [D365 usmf settlement 5637144576]"}
    stray = {"amount-paid": "3.00", "notes": "manual"}
    sandboxes.coupa.state.add_payments(invoice["id"], {}, [paid, paid, stray])
    end = compare(sandboxes, APWork(1, made, set()), set())
    assert end.payments_made == 2 and end.payments_in_coupa == 1
    assert end.payment_duplicates == 1 and end.payments_missing == 1 and end.payments_unexpected == 1
