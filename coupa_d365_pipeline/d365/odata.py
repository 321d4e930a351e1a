"""OData literal escaping, key predicates and filter building for F&O (pure functions).

Every value that reaches a URL goes through :func:`literal`, so a Coupa value containing ``'``
(``O'NEIL-2026-001``) is quoted by doubling and can neither break nor inject into ``$filter``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Mapping
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
        when = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return f"{value.isoformat()}T12:00:00Z"
    text = str(value)
    return "'" + text.replace("'", "''") + "'"


def eq(field: str, value: Any) -> str:
    return f"{_field(field)} eq {literal(value)}"


def compare(field: str, op: str, value: Any) -> str:
    if op not in ("eq", "ne", "gt", "ge", "lt", "le"):
        raise ValueError(f"unsupported OData comparison {op!r}")
    return f"{_field(field)} {op} {literal(value)}"


def and_(*clauses: str | None) -> str:
    parts = [c for c in clauses if c]
    return " and ".join(f"({c})" if " or " in c else c for c in parts)


def or_(*clauses: str) -> str:
    return "(" + " or ".join(clauses) + ")"


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
