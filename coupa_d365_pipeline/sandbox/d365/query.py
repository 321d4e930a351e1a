"""OData query options of the D365 sandbox, on top of :mod:`.odata_filter`: keys, ``$select``, ``$orderby``,
``$top``/``$skip``/``$count``, server-driven paging and ``$metadata``.

Invariants: reads never change the store; a collection read sees only ``default_company`` unless
``cross-company=true``; ``@odata.nextLink`` carries every original option except ``$skip``/``$top``, which it
re-derives, so following it yields exactly the next page; unknown properties and malformed options are
answered with F&O's 400 (``ODataException``) before any row is read.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from .odata import Resp, _bad_request, _query_error
from .odata_filter import parse_filter
from .schema import D365Schema, EntitySchema

if TYPE_CHECKING:
    from .state import D365State

_SYSTEM_QUERY_OPTIONS = {"$filter", "$select", "$top", "$skip", "$count", "$orderby", "$format"}


def parse_key_predicate(text: str, sch: EntitySchema) -> dict[str, Any]:
    """Parse ``dataAreaId='usmf',Key='A',Num=1`` (the text between the parentheses)."""
    mismatch = _bad_request(
        "The number of keys specified in the URI does not match number of key properties for the resource "
        f"'{sch.full_type_name}'."
    )
    parts: list[tuple[str | None, str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        name = None
        j = i
        while j < n and (text[j].isalnum() or text[j] == "_"):
            j += 1
        k = j
        while k < n and text[k] == " ":
            k += 1
        if j > i and k < n and text[k] == "=":
            name = text[i:j]
            i = k + 1
            while i < n and text[i] == " ":
                i += 1
        if i < n and text[i] == "'":
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise _bad_request(f"Unterminated string literal in the key segment '({text})'.")
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        buf.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            parts.append((name, "".join(buf), True))
        else:
            j = i
            while j < n and text[j] != ",":
                j += 1
            raw = text[i:j].strip()
            if not raw:
                raise mismatch
            parts.append((name, raw, False))
            i = j
        while i < n and text[i] == " ":
            i += 1
        if i < n:
            if text[i] != ",":
                raise _bad_request(
                    f"Bad Request - Error in query syntax: unexpected '{text[i]}' in the key segment '({text})'."
                )
            i += 1
            if i >= n:
                raise mismatch
    if len(parts) != len(sch.keys):
        raise mismatch
    values: dict[str, Any] = {}
    for idx, (name, raw, quoted) in enumerate(parts):
        if name is None:
            if len(sch.keys) != 1:
                raise mismatch
            name = sch.keys[idx]
        if name not in sch.keys or name in values:
            raise mismatch
        prop = sch.properties[name]
        if prop.type == "Edm.String" or prop.is_enum:
            if not quoted:
                raise _bad_request(f"The key value '{raw}' for the property '{name}' must be a quoted string literal.")
            values[name] = raw
        else:
            if quoted:
                raise _bad_request(
                    f"The key value '{raw}' for the property '{name}' of type '{prop.type}' must not be quoted."
                )
            try:
                values[name] = prop.coerce(Decimal(raw.rstrip("mMlL")))
            except Exception:
                raise _bad_request(f"The key value '{raw}' is not a valid '{prop.type}' literal.") from None
    return values


def parse_select(sch: EntitySchema, text: str | None) -> list[str] | None:
    if text is None or text.strip() in ("", "*"):
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    for n in names:
        if n != "*" and n not in sch.properties:
            raise _query_error(f"Could not find a property named '{n}' on type '{sch.full_type_name}'.")
    return None if "*" in names else names


def shape(sch: EntitySchema, rec: dict[str, Any], select: list[str] | None, etag: str) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.etag": etag}
    for name in select if select is not None else list(sch.properties):
        out[name] = rec.get(name)
    return out


def filtered_rows(state: D365State, sch: EntitySchema, options: dict[str, str], cross: bool) -> list[dict[str, Any]]:
    rows = state.scoped_rows(sch.name, cross)
    text = options.get("$filter")
    if text is not None:
        flt = parse_filter(text, {n: p.type for n, p in sch.properties.items()}, sch.type_name, sch.enums)
        rows = [r for r in rows if flt.matches(r)]
    return rows


def get_collection(
    state: D365State,
    sch: EntitySchema,
    params: list[tuple[str, str]],
    options: dict[str, str],
    cross: bool,
    *,
    env_url: str,
    page_size: int,
) -> Resp:
    select = parse_select(sch, options.get("$select"))

    def non_negative(opt: str) -> int | None:
        raw = options.get(opt)
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise _query_error(
                f"Invalid value '{raw}' for {opt} query option found. The {opt} query option "
                "requires a non-negative integer value."
            )
        return int(raw)

    top, skip = non_negative("$top"), non_negative("$skip") or 0
    count_opt = options.get("$count", "false").strip().lower()
    if count_opt not in ("true", "false"):
        raise _query_error(f"'{options.get('$count')}' is not a valid count option.")
    order = parse_orderby(sch, options.get("$orderby"))
    rows = filtered_rows(state, sch, options, cross)
    for prop, desc in reversed(order):
        rows.sort(key=lambda r, p=prop: _sort_key(r.get(p)), reverse=desc)
    total = len(rows)
    remaining = rows[skip:]
    if top is not None:
        remaining = remaining[:top]
    page = remaining[:page_size]
    with state.lock:
        value = [shape(sch, r, select, state.etag_of(sch.name, r)) for r in page]
    ctx = f"{env_url}/data/$metadata#{sch.name}" + (f"({','.join(select)})" if select else "")
    out: dict[str, Any] = {"@odata.context": ctx}
    if count_opt == "true":
        out["@odata.count"] = total
    out["value"] = value
    if len(remaining) > len(page):
        nxt = [(k, v) for k, v in params if k not in ("$skip", "$top")]
        nxt.append(("$skip", str(skip + len(page))))
        if top is not None:
            nxt.append(("$top", str(top - len(page))))
        out["@odata.nextLink"] = f"{env_url}/data/{sch.name}?" + urlencode(nxt, quote_via=quote, safe="$',*:")
    return Resp.json(200, out)


def parse_orderby(sch: EntitySchema, text: str | None) -> list[tuple[str, bool]]:
    if not text:
        return []
    order: list[tuple[str, bool]] = []
    for item in text.split(","):
        bits = item.split()
        if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
            raise _query_error(f"Syntax error in $orderby: '{item.strip()}'.")
        if bits[0] not in sch.properties:
            raise _query_error(f"Could not find a property named '{bits[0]}' on type '{sch.full_type_name}'.")
        order.append((bits[0], len(bits) == 2 and bits[1].lower() == "desc"))
    return order


def metadata_xml(schema: D365Schema) -> str:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices>',
        '<Schema Namespace="Microsoft.Dynamics.DataEntities" xmlns="http://docs.oasis-open.org/odata/ns/edm">',
    ]
    for sch in schema.entity_sets.values():
        parts.append(
            f'<EntityType Name="{sch.type_name}"><Key>'
            + "".join(f'<PropertyRef Name="{k}"/>' for k in sch.keys)
            + "</Key>"
        )
        for p in sch.properties.values():
            parts.append(f'<Property Name="{p.name}" Type="{p.type}" Nullable="{str(p.nullable).lower()}"/>')
        parts.append("</EntityType>")
    parts.append('<EntityContainer Name="Resources">')
    for sch in schema.entity_sets.values():
        parts.append(f'<EntitySet Name="{sch.name}" EntityType="{sch.full_type_name}"/>')
    parts.append("</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>")
    return "".join(parts)


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        return (1, value.casefold())
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)


def _matching_paren(text: str) -> int:
    depth, in_str, i = 0, False, 0
    while i < len(text):
        ch = text[i]
        if in_str:
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                in_str = False
        elif ch == "'":
            in_str = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1
