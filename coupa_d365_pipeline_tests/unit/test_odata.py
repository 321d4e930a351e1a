from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from coupa_d365_pipeline.d365 import odata


def test_string_literal_doubles_quotes():
    assert odata.literal("O'NEIL-2026-001") == "'O''NEIL-2026-001'"
    assert odata.eq("InvoiceNumber", "x' or 1 eq 1 or 'a' eq 'a") == \
        "InvoiceNumber eq 'x'' or 1 eq 1 or ''a'' eq ''a'"


def test_other_literals():
    assert odata.literal(True) == "true"
    assert odata.literal(None) == "null"
    assert odata.literal(12) == "12"
    assert odata.literal(Decimal("-10.50")) == "-10.50"
    assert odata.literal(odata.Enum("NoYes", "Yes")) == "Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    assert odata.literal(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05Z"
    assert odata.literal(date(2026, 1, 2)) == "2026-01-02T12:00:00Z"


def test_key_predicate_quotes_and_percent_encodes():
    key = {"dataAreaId": "usmf", "HeaderReference": "A'B/C D", "InvoiceLineNumber": 1}
    assert odata.key_predicate(key) == "(dataAreaId='usmf',HeaderReference='A''B%2FC%20D',InvoiceLineNumber=1)"


def test_and_or_and_field_validation():
    clause = odata.and_(odata.eq("dataAreaId", "usmf"), odata.or_(odata.eq("A", 1), odata.eq("B", 2)), None)
    assert clause == "dataAreaId eq 'usmf' and ((A eq 1 or B eq 2))"
    with pytest.raises(ValueError):
        odata.eq("Name eq 'x' or Name", "y")
    with pytest.raises(ValueError):
        odata.compare("A", "has", 1)


def test_schema_copy_matches_the_shared_reference():
    import json
    from pathlib import Path

    import pytest

    from coupa_d365_pipeline.d365.schema import entity_set

    reference = Path(__file__).resolve().parents[3] / "shared" / "reference" / "d365" / "entities.json"
    if not reference.exists():
        pytest.skip(f"shared reference not present at {reference}")
    ours = Path(__file__).resolve().parents[2] / "coupa_d365_pipeline" / "d365" / "entities.json"
    assert json.loads(ours.read_text()) == json.loads(reference.read_text())
    assert entity_set("VendorInvoiceLines").keys == ("dataAreaId", "HeaderReference", "InvoiceLineNumber")
    assert not entity_set("MainAccounts").company_scoped
