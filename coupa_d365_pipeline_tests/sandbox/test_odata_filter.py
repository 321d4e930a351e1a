"""Unit tests of the OData $filter parser/evaluator used by the D365 sandbox."""

from __future__ import annotations

from decimal import Decimal

import pytest

from coupa_d365_pipeline.sandbox.d365.odata_filter import ODataFilterError, parse_filter, tokenize

PROPS = {
    "Name": "Edm.String",
    "Amount": "Edm.Decimal",
    "Count": "Edm.Int64",
    "Date": "Edm.DateTimeOffset",
    "Flag": "Microsoft.Dynamics.DataEntities.NoYes",
    "Active": "Edm.Boolean",
    "Id": "Edm.Guid",
}
ENUMS = {"Flag": ["No", "Yes"]}
REC = {
    "Name": "O'Brien Supplies",
    "Amount": Decimal("10.50"),
    "Count": 3,
    "Date": "2026-01-15T12:00:00Z",
    "Flag": "Yes",
    "Active": True,
    "Id": "6f1c7a36-4a55-4b25-9a66-1d2f1e7c0001",
}


def match(text: str, rec: dict = REC) -> bool:
    return parse_filter(text, PROPS, "Thing", ENUMS).matches(rec)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Amount eq 10.5", True),
        ("Amount ne 10.5", False),
        ("Amount gt 10", True),
        ("Amount ge 10.5", True),
        ("Amount lt 10.5", False),
        ("Amount le 10.5", True),
        ("Amount gt -1", True),
        ("Count eq 3", True),
        ("Count lt -3", False),
        ("Active eq true", True),
        ("Active eq false", False),
        ("Name eq null", False),
        ("Name ne null", True),
        ("Date gt 2026-01-01T00:00:00Z", True),
        ("Date lt 2026-01-15T12:00:00Z", False),
        ("Date ge 2026-01-15T13:00:00+01:00", True),
        ("Id eq 6f1c7a36-4a55-4b25-9a66-1d2f1e7c0001", True),
    ],
)
def test_comparison_operators(text: str, expected: bool) -> None:
    assert match(text) is expected


def test_logical_operators_and_precedence() -> None:
    assert match("Amount gt 10 and Count eq 3")
    assert not match("Amount gt 10 and Count eq 4")
    assert match("Amount gt 100 or Count eq 3")
    assert match("not (Count eq 4)")
    assert not match("not Count eq 3")
    # and binds tighter than or
    assert match("Count eq 4 and Amount gt 100 or Flag eq Microsoft.Dynamics.DataEntities.NoYes'Yes'")
    assert not match("Count eq 4 and (Amount gt 100 or Flag eq Microsoft.Dynamics.DataEntities.NoYes'Yes')")
    assert match("((Count eq 3))")


def test_string_literal_with_doubled_quote_and_case_insensitivity() -> None:
    assert match("Name eq 'O''Brien Supplies'")
    assert match("Name eq 'o''brien supplies'")  # SQL collation of F&O is case-insensitive
    assert not match("Name eq 'OBrien Supplies'")
    assert tokenize("'a''b'")[0].value == "a'b"


def test_wildcards() -> None:
    assert match("Name eq '*Brien*'")
    assert match("Name eq 'O''B*'")
    assert match("Name eq '*supplies'")
    assert not match("Name eq 'Brien*'")
    assert match("Name ne 'Brien*'")


def test_enum_literals() -> None:
    assert match("Flag eq Microsoft.Dynamics.DataEntities.NoYes'Yes'")
    assert not match("Flag ne Microsoft.Dynamics.DataEntities.NoYes'Yes'")
    with pytest.raises(ODataFilterError, match="only support the eq and ne"):
        match("Flag gt Microsoft.Dynamics.DataEntities.NoYes'No'")
    with pytest.raises(ODataFilterError, match="not a valid enumeration"):
        match("Flag eq Microsoft.Dynamics.DataEntities.NoYes'Maybe'")
    with pytest.raises(ODataFilterError, match="incompatible types"):
        match("Flag eq Microsoft.Dynamics.DataEntities.Gender'Male'")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Flag has Microsoft.Dynamics.DataEntities.NoYes'Yes'", "'has' operator is not supported"),
        ("Name in ('a','b')", "'in' operator is not supported"),
        ("Nope eq 1", "Could not find a property named 'Nope' on type 'Microsoft.Dynamics.DataEntities.Thing'."),
        ("Name eq 'open", "Unterminated string literal"),
        ("Amount eq", "expression expected"),
        ("(Amount eq 1", "')' expected"),
        ("Amount eq 1 Count", "unexpected 'Count'"),
        ("Name eq 1", "incompatible types"),
        ("Amount", "single boolean value"),
        ("contains(Name,'x')", "function 'contains' is not supported"),
        ("Amount add 1 eq 2", "arithmetic operator 'add'"),
        ("Name eq 'x' ; drop", "not valid"),
        ("", "empty"),
    ],
)
def test_errors(text: str, fragment: str) -> None:
    with pytest.raises(ODataFilterError) as exc:
        match(text)
    assert fragment in str(exc.value)
    assert exc.value.status == 400


def test_never_evaluates_python() -> None:
    with pytest.raises(ODataFilterError):
        match("__import__('os').system('echo hi') eq 1")
