"""Markdown tables for Dagster metadata (``MetadataValue.md``), built one way everywhere.

Every cell goes through :func:`cell`: ``|`` becomes ``\\|`` (GitHub-flavoured Markdown shows it as a
literal bar instead of starting a new column) and every line break (``\\r\\n``, ``\\n``, ``\\r``)
becomes one space (a table row is one line). Invariant: plain string work, no Dagster import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["cell", "table"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def cell(value: Any, max_chars: int | None = None) -> str:
    """``value`` as one table cell: None is empty, text is cut to ``max_chars`` (before escaping,
    so an escape is never cut in half), bars escaped, line breaks made spaces."""
    text = "" if value is None else str(value)
    text = _LINE_BREAK.sub(" ", text)
    if max_chars is not None:
        text = text[:max_chars]
    return text.replace("|", "\\|")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, limit: int | None = None, empty: str = "None."
) -> str:
    """A Markdown table of ``rows`` under ``headers``; ``empty`` when there are no rows. With
    ``limit``, the rows after the first ``limit`` become one ``| … | N more |`` row."""
    rows = list(rows)
    if not rows:
        return empty
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    shown = rows if limit is None else rows[:limit]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown]
    if len(rows) > len(shown):
        more = ["…", f"{len(rows) - len(shown)} more"] + [""] * (len(headers) - 2)
        lines.append("| " + " | ".join(more[: max(len(headers), 1)]) + " |")
    return "\n".join(lines)
