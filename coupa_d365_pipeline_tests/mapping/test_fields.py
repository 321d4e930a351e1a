from decimal import Decimal

from coupa_d365_pipeline.mapping.fields import changed_fields, same_value


def test_empty_is_empty_and_zero_is_a_value():
    assert same_value(None, "") and same_value("  ", None)
    assert not same_value(None, 0) and not same_value("", Decimal("0"))


def test_numbers_compare_as_decimals_only_when_one_side_is_a_number():
    assert same_value(Decimal("5.00"), 5) and same_value(10.5, "10.50") and same_value(Decimal("1"), "1.0")
    assert not same_value("0100", "100")  # two texts: an account or item number, not a quantity
    assert not same_value(Decimal("1"), "n/a") and not same_value(True, 1)


def test_dates_compare_by_day():
    assert same_value("2026-11-29T12:00:00Z", "2026-11-29T00:00:00Z")
    assert same_value("2026-11-29T12:00:00Z", "2026-11-29")
    assert not same_value("2026-11-29T12:00:00Z", "2026-11-30T12:00:00Z")
    # text that merely contains a "T" is text, not a date
    assert not same_value("Tailspin Toys Ltd", "Tailspin Toys Inc")


def test_text_is_stripped_and_folded_only_when_asked():
    assert same_value(" INV-1 ", "INV-1") and not same_value("inv-1", "INV-1")
    assert not same_value("Hex  bolt", "Hex bolt")
    assert same_value("hex  BOLT ", "Hex bolt", fold=True)


def test_changed_fields_reports_desired_values_of_fields_that_differ():
    current = {"A": "x", "B": 5, "C": "same"}
    desired = {"A": "y", "B": Decimal("5.0"), "C": "same", "D": "new"}
    assert changed_fields(current, desired, ("A", "B", "C", "D", "E")) == {"A": "y", "D": "new"}
