import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources

import pytest

from coupa_d365_pipeline.d365 import odata
from coupa_d365_pipeline.d365.schema import entity_set, known_entity_sets


def test_string_literal_doubles_quotes():
    assert odata.literal("O'NEIL-2026-001") == "'O''NEIL-2026-001'"
    assert odata.eq("InvoiceNumber", "x' or 1 eq 1 or 'a' eq 'a") == "InvoiceNumber eq 'x'' or 1 eq 1 or ''a'' eq ''a'"


def test_other_literals():
    assert odata.literal(True) == "true"
    assert odata.literal(None) == "null"
    assert odata.literal(12) == "12"
    assert odata.literal(Decimal("-10.50")) == "-10.50"
    assert odata.literal(odata.Enum("NoYes", "Yes")) == "Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    assert odata.literal(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
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


# sha256 of coupa_d365_pipeline/d365/entities.json, byte-identical to shared/reference/d365/entities.json
# when it was copied. Changing the schema file means re-copying it from the reference and updating this.
ENTITIES_SHA256 = "004251db3ff93944be26367e334c1d3a96c303c44b0d8120f5e6c1cdacac3cda"


def test_schema_is_served_from_the_package_copy_of_entities_json():
    packaged = resources.files("coupa_d365_pipeline.d365").joinpath("entities.json").read_bytes()
    assert hashlib.sha256(packaged).hexdigest() == ENTITIES_SHA256
    sets = json.loads(packaged)["entity_sets"]
    assert known_entity_sets() == sorted(sets) and len(sets) == 65
    for name, raw in sets.items():
        schema = entity_set(name)
        assert schema.keys == tuple(raw["keys"]) and dict(schema.properties) == raw["properties"], name
    assert entity_set("VendorInvoiceLines").keys == ("dataAreaId", "HeaderReference", "InvoiceLineNumber")
    assert entity_set("VendorInvoiceLines").company_scoped
    assert not entity_set("MainAccounts").company_scoped
    with pytest.raises(KeyError, match="case-sensitive"):
        entity_set("vendorinvoicelines")


def test_dumps_renders_decimals_with_their_exact_digits():
    from decimal import Decimal as D

    body = {"a": D("12345678901234567.89"), "b": D("0.1"), "c": D("1E+2"), "d": [D("-0.30")], "e": "x\u0000y"}
    text = odata.dumps(body).decode()
    assert text == '{"a":12345678901234567.89,"b":0.1,"c":100,"d":[-0.30],"e":"x\\u0000y"}'
    assert json.loads(text, parse_float=D) == {
        "a": D("12345678901234567.89"),
        "b": D("0.1"),
        "c": 100,
        "d": [D("-0.30")],
        "e": "x\u0000y",
    }
    with pytest.raises(ValueError, match="not a finite number"):
        odata.dumps({"a": D("NaN")})


# -- issue 9: F&O reads `*` in an eq literal as a wildcard and compares case-insensitively ----------
def test_all_eq_is_a_superset_query_and_exactly_keeps_only_equal_rows():
    """There is no documented escape for ``*`` in F&O OData: ``eq '*'`` matches every row. The
    lookup keeps the quoted eq (the narrowest superset) and the rows are post-filtered."""
    assert (
        odata.all_eq({"InvoiceNumber": "INV*", "InvoiceAccount": "V-1"})
        == "InvoiceNumber eq 'INV*' and InvoiceAccount eq 'V-1'"
    )
    rows = [
        {"InvoiceNumber": "INV-1", "InvoiceAccount": "V-1"},
        {"InvoiceNumber": "*", "InvoiceAccount": "V-1"},
        {"InvoiceNumber": "inv*", "InvoiceAccount": "v-1"},
        {"InvoiceNumber": "%", "InvoiceAccount": "V-1"},
        {"InvoiceNumber": "_", "InvoiceAccount": "V-1"},
        {"InvoiceNumber": None, "InvoiceAccount": "V-1"},
    ]
    assert odata.exactly(rows, {"InvoiceNumber": "*", "InvoiceAccount": "V-1"}) == [rows[1]]
    # the collation is case-insensitive: a number differing only in case is the same key to F&O
    assert odata.exactly(rows, {"InvoiceNumber": "INV*", "InvoiceAccount": "V-1"}) == [rows[2]]
    assert odata.exactly(rows, {"InvoiceNumber": "%"}) == [rows[3]]
    assert odata.exactly(rows, {"InvoiceNumber": "_"}) == [rows[4]]
    assert odata.exactly(rows, {"InvoiceNumber": "INV-"}) == []
    assert odata.exactly([{"LineNumber": 1}, {"LineNumber": "2"}], {"LineNumber": 2}) == [{"LineNumber": "2"}]
    assert odata.fold("ÄBc") == odata.fold("äbC") and odata.fold(None) == ""


def test_prefix_cover_lists_the_values_while_they_fit_then_shares_prefixes_and_always_matches_every_value():
    import re

    from coupa_d365_pipeline.d365.odata import prefix_cover

    def matches(cover: str, value: str) -> bool:  # F&O's eq: case-insensitive, '*' a wildcard
        patterns = re.findall(r"HeaderReference eq '((?:[^']|'')*)'", cover)
        return any(
            re.fullmatch(".*".join(map(re.escape, p.replace("''", "'").split("*"))), value, re.I) for p in patterns
        )

    few = ["COUPA-1", "COUPA-2", "O'Hara*x"]
    assert prefix_cover("HeaderReference", few) == (
        "(HeaderReference eq 'COUPA-1' or HeaderReference eq 'COUPA-2' or HeaderReference eq 'O''Hara*x')"
    )
    many = [f"COUPA-{n}" for n in range(100000, 110000, 7)] + ["coupa-5", "Z"]
    cover = prefix_cover("HeaderReference", many, max_chars=600)
    assert cover is not None and len(cover) <= 600 and "*'" in cover
    assert all(matches(cover, v) for v in many)
    assert prefix_cover("HeaderReference", [f"{c}{n}" for c in "ABCDEFGHIJ" for n in range(10)], max_chars=60) is None
    assert prefix_cover("HeaderReference", []) is None
