"""D365 F&O financial dimension display strings.

A display string joins segment values with the delimiter (``DimensionParameters``, default ``-``);
an empty segment is simply nothing between two delimiters (``"001--"``), trailing empties are kept.
A value that contains the delimiter is escaped with a backslash (``"CC-10"`` -> ``CC\\-10``), as
D365 does for vendor accounts in ``AccountDisplayValue`` (``US\\-108``).

Only the delimiter is escaped (as D365 does); a literal backslash is left alone, so a value that
*ends* with a backslash followed by another segment does not round-trip. Such values do not occur
in dimension values in practice.
"""

from __future__ import annotations

__all__ = ["escape_segment", "display_value", "parse_display_value"]

_ESC = "\\"


def escape_segment(value: str, delimiter: str = "-") -> str:
    """Backslash-escape every occurrence of ``delimiter`` in one segment value."""
    if not delimiter:
        raise ValueError("delimiter must not be empty")
    return value.replace(delimiter, _ESC + delimiter)


def display_value(values: list[str], delimiter: str = "-") -> str:
    """Join segment values into a display string; empty segments are kept (["001","",""] -> "001--")."""
    return delimiter.join(escape_segment(v or "", delimiter) for v in values)


def parse_display_value(text: str, delimiter: str = "-") -> list[str]:
    """Inverse of :func:`display_value`: split on unescaped delimiters and unescape ("" -> [""])."""
    if not delimiter:
        raise ValueError("delimiter must not be empty")
    out: list[str] = []
    cur: list[str] = []
    i, n, d = 0, len(text), len(delimiter)
    while i < n:
        if text[i] == _ESC and text.startswith(delimiter, i + 1):
            cur.append(delimiter)
            i += 1 + d
        elif text.startswith(delimiter, i):
            out.append("".join(cur))
            cur = []
            i += d
        else:
            cur.append(text[i])
            i += 1
    out.append("".join(cur))
    return out
