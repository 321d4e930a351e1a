"""OData literal escaping, key predicates and filter building for F&O (pure functions).

Every value that reaches a URL goes through :func:`literal`, so a Coupa value containing ``'``
(``O'NEIL-2026-001``) is quoted by doubling and can neither break nor inject into ``$filter``.

Quoting is not enough for equality: F&O reads ``*`` inside an ``eq`` string literal as a wildcard
(``eq '*text*'``) and there is no documented escape for it, and F&O compares strings with its SQL
Server collation (case-insensitive). A lookup by a user-controlled value is therefore a *superset*
query — :func:`all_eq` — whose rows are kept only if they really equal the value — :func:`exactly`,
with the same case-insensitive comparison as F&O (:func:`fold`). A key predicate in the URL
(:func:`key_predicate`) is an exact lookup and needs no post-filter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

ENUM_NAMESPACE = "Microsoft.Dynamics.DataEntities"


@dataclass(frozen=True)
class Enum:
    """An F&O enum literal, e.g. ``Enum("NoYes", "Yes")`` -> ``Microsoft.Dynamics.DataEntities.NoYes'Yes'``."""

    type_name: str
    member: str


def literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return f"{ENUM_NAMESPACE}.{value.type_name}'{value.member.replace(chr(39), chr(39) * 2)}'"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return f"{value.isoformat()}T12:00:00Z"
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def eq(field: str, value: Any) -> str:
    return f"{_field(field)} eq {literal(value)}"


WILDCARD = "*"


def fold(value: Any) -> str:
    """A string as F&O's case-insensitive collation compares it (``None`` -> ``""``)."""
    return "" if value is None else str(value).casefold()


def all_eq(fields: Mapping[str, Any]) -> str:
    """``A eq 'x' and B eq 'y'``: a superset query when a value holds ``*`` — post-filter with :func:`exactly`."""
    if not fields:
        raise ValueError("all_eq needs at least one field")
    return and_(*(eq(name, value) for name, value in fields.items()))


def equal(row: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """Does ``row`` equal every wanted value, as F&O compares (strings case-insensitively, never as a pattern)?"""
    for name, wanted in fields.items():
        value = row.get(name)
        if isinstance(wanted, str) or isinstance(value, str):
            if fold(value) != fold(wanted):
                return False
        elif value != wanted:
            try:
                if Decimal(str(value)) != Decimal(str(wanted)):
                    return False
            except (ArithmeticError, ValueError):
                return False
    return True


def exactly(rows: Iterable[Mapping[str, Any]], fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of an :func:`all_eq` query that really equal ``fields`` (drops what a ``*`` matched)."""
    return [dict(row) for row in rows if equal(row, fields)]


def compare(field: str, op: str, value: Any) -> str:
    if op not in ("eq", "ne", "gt", "ge", "lt", "le"):
        raise ValueError(f"unsupported OData comparison {op!r}")
    return f"{_field(field)} {op} {literal(value)}"


def and_(*clauses: str | None) -> str:
    parts = [c for c in clauses if c]
    return " and ".join(f"({c})" if " or " in c else c for c in parts)


def or_(*clauses: str) -> str:
    return "(" + " or ".join(clauses) + ")"


FILTER_BUDGET = 3000  # characters of one prefix cover: the URL stays well under F&O's limit once encoded


def prefix_cover(field: str, values: Iterable[Any], max_chars: int = FILTER_BUDGET) -> str | None:
    """A short ``$filter`` matching at least every row whose ``field`` equals one of ``values``:
    ``field eq 'v'`` per value while that fits in ``max_chars``, else shared prefixes as F&O's
    wildcard (``field eq 'COUPA-10*'``), as long as the prefixes still fit. ``None``: no prefix
    short enough fits, so only a query without a ``field`` condition finds them all.

    A superset by construction (a prefix pattern matches every value it was cut from; F&O compares
    case-insensitively and reads ``*`` in a value as a wildcard too — both only add rows): post-filter
    the rows by exact value, as :func:`exactly` does."""
    texts = sorted({str(v) for v in values if v is not None and str(v) != ""})
    if not texts:
        return None
    longest = max(len(t) for t in texts)
    for length in range(longest, 0, -1):
        patterns = list(dict.fromkeys(t if len(t) <= length else t[:length] + WILDCARD for t in texts))
        if len(patterns) * (len(field) + 7) > max_chars:  # cannot fit at this length: cut shorter
            continue
        clauses = [eq(field, p) for p in patterns]
        if sum(len(c) + 4 for c in clauses) <= max_chars:
            return clauses[0] if len(clauses) == 1 else or_(*clauses)
    return None


def key_predicate(key: Mapping[str, Any]) -> str:
    """``(dataAreaId='usmf',HeaderReference='A''B')``, percent-encoded for use in a URL path."""
    inner = ",".join(f"{_field(name)}={literal(value)}" for name, value in key.items())
    return "(" + quote(inner, safe="'=,:") + ")"


def _field(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"{name!r} is not an OData property name")
    return name


def jsonable(value: Any) -> Any:
    """Make a D365 body JSON-ready: datetime/date -> Edm.DateTimeOffset text; Decimals stay
    Decimals (serialize with :func:`dumps`, which writes their exact digits — never a float)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return literal(value)
    return value


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite number; D365 Edm.Decimal cannot hold it")
    return format(value, "f")


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            out.append(("," if index else "") + json.dumps(str(key)) + ":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value))
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number; D365 Edm.Decimal cannot hold it")
    else:
        out.append(json.dumps(value))


def dumps(value: Any) -> bytes:
    """Compact JSON of a D365 body with every Decimal written as its exact digits
    (``12345678901234567.89`` stays that, ``0.1`` stays ``0.1``): F&O reads Edm.Decimal from the
    JSON number text, so nothing is lost on the way as it would be through a float."""
    out: list[str] = []
    _encode(jsonable(value), out)
    return "".join(out).encode("utf-8")
