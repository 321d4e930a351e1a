"""Issue 9, item 1: which D365 invoice found by natural key may be adopted (pure verdicts)."""

from decimal import Decimal

from coupa_d365_pipeline.mapping.invoices import MappedInvoice
from coupa_d365_pipeline.sync.adoption import Adoption, judge

MAPPED = MappedInvoice(
    legal_entity="usmf",
    vendor_account="V-100",
    invoice_number="INV-1",
    header={
        "dataAreaId": "usmf",
        "InvoiceNumber": "INV-1",
        "InvoiceAccount": "V-100",
        "Currency": "USD",
        "ImportedAmount": Decimal("250.00"),
    },
    lines=[{"Amount": Decimal("100.00")}, {"Amount": Decimal("150.01")}],
)


def pending(**fields):
    return {
        "HeaderReference": "AP-1",
        "InvoiceNumber": "INV-1",
        "InvoiceAccount": "V-100",
        "Currency": "USD",
        "ImportedAmount": 250,
        **fields,
    }


def posted(**fields):
    return {
        "InvoiceId": "INV-1",
        "InvoiceAccount": "V-100",
        "LedgerVoucher": "APVOU-7",
        "CurrencyCode": "USD",
        "InvoiceAmount": "250.01",
        **fields,
    }


def test_our_header_reference_is_ours_whatever_it_holds():
    for ref in ("COUPA-12", "coupa-12"):
        verdict = judge(
            pending(HeaderReference=ref, ImportedAmount=9, InvoiceNumber="inv-1"),
            MAPPED,
            12,
            posted=False,
            our_references=["COUPA-12"],
        )
        assert verdict.adoption is Adoption.OURS and verdict.adoptable
    assert (
        judge(
            pending(HeaderReference="OLD-REF"), MAPPED, 12, posted=False, our_references=["COUPA-12", "OLD-REF"]
        ).adoption
        is Adoption.OURS
    )


def test_keyed_by_hand_exactly_as_we_would_send_it_is_the_same_invoice():
    assert judge(pending(), MAPPED, 12, posted=False, our_references=["COUPA-12"]).adoption is Adoption.SAME_INVOICE
    # posting totals the lines: the line sum counts as the same amount too
    assert judge(posted(), MAPPED, 12, posted=True).adoption is Adoption.SAME_INVOICE


def test_another_amount_is_a_duplicate_invoice_number_with_a_reason_a_coupa_user_can_act_on():
    verdict = judge(
        pending(HeaderReference="COUPA-2", ImportedAmount="13307.67"),
        MAPPED,
        12,
        posted=False,
        our_references=["COUPA-12"],
    )
    assert not verdict.adoptable
    assert verdict.reason == (
        "D365 usmf already holds invoice INV-1 of vendor V-100 (pending COUPA-2, amount 13,307.67 USD vs 250.00 USD "
        "in Coupa), booked for Coupa invoice 2: this looks like a duplicate invoice number — correct the invoice "
        "number in Coupa or void one of them"
    )
    verdict = judge(posted(InvoiceAmount=-5), MAPPED, 12, posted=True)
    assert not verdict.adoptable and "posted voucher APVOU-7, amount -5.00 USD vs 250.00 USD" in verdict.reason
    assert not judge(pending(Currency="EUR"), MAPPED, 12, posted=False).adoptable


def test_number_differing_only_in_case_or_booked_for_another_coupa_invoice_is_never_adopted():
    verdict = judge(pending(InvoiceNumber="inv-1"), MAPPED, 12, posted=False)
    assert not verdict.adoptable and "differ only in case" in verdict.reason
    verdict = judge(posted(), MAPPED, 12, posted=True, booked_for=[12, 40])
    assert not verdict.adoptable and "booked for Coupa invoice 40" in verdict.reason
    assert judge(posted(), MAPPED, 12, posted=True, booked_for=[12]).adoptable
