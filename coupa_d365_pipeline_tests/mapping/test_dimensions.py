import pytest

from coupa_d365_pipeline.mapping.dimensions import display_value, escape_segment, parse_display_value


def test_escape_segment_backslash_escapes_delimiter():
    assert escape_segment("CC-10", "-") == "CC\\-10"
    assert escape_segment("007", "-") == "007"
    assert escape_segment("A-B-C", "-") == "A\\-B\\-C"
    assert escape_segment("A.B", "-") == "A.B"
    assert escape_segment("A.B", ".") == "A\\.B"


def test_display_value_keeps_empty_segments():
    assert display_value(["001", "", ""], "-") == "001--"
    assert display_value(["", "", ""], "-") == "--"
    assert display_value(["001", "CC-10", "022"], "-") == "001-CC\\-10-022"
    assert display_value(["001", "", "022"], "-") == "001--022"


def test_parse_display_value():
    assert parse_display_value("001--", "-") == ["001", "", ""]
    assert parse_display_value("001-CC\\-10-022", "-") == ["001", "CC-10", "022"]
    assert parse_display_value("600150-001-007-022", "-") == ["600150", "001", "007", "022"]
    assert parse_display_value("", "-") == [""]
    # a backslash that does not precede the delimiter is literal
    assert parse_display_value("A\\B-C", "-") == ["A\\B", "C"]


@pytest.mark.parametrize(
    "values",
    [
        ["001", "", ""],
        ["", "", ""],
        ["001", "CC-10", "022"],
        ["-", "--", "a-"],
        ["x"],
        ["CC-10", "", "CC-10"],
        ["a b", "ü-ß", ""],
    ],
)
@pytest.mark.parametrize("delimiter", ["-", ".", "_", "|", "~", "--", ".."])
def test_round_trip(values, delimiter):
    values = [v.replace("-", delimiter) for v in values]
    text = display_value(values, delimiter)
    assert parse_display_value(text, delimiter) == values


def test_empty_delimiter_rejected():
    with pytest.raises(ValueError):
        escape_segment("x", "")
    with pytest.raises(ValueError):
        parse_display_value("x", "")
