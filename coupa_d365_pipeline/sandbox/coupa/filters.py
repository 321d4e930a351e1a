"""Query filters of the Coupa sandbox: ``attr=value``, ``attr[op]=value`` and nested ``assoc[attr]=value``.

Invariants: an unknown attribute, operator or malformed value is a 400 naming what is filterable (never an
empty result); lists fan out (``invoice-lines[po-number]=X`` matches when any line matches), and ``not_eq``/
``not_in`` must hold for every value; ``*-at``/``*-date`` attributes compare as instants, decimal strings
compare numerically for ``gt``/``lt``/…, everything else as text; a filter never changes the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from .common import _bad, _is_dt_attr, _norm, parse_dt

OPS = {"gt", "lt", "gt_or_eq", "lt_or_eq", "not_eq", "in", "not_in", "contains", "starts_with", "ends_with", "blank"}
IGNORED_PARAMS = {"fields", "return_object", "filter", "show_deleted_lines", "limit", "offset", "order_by", "dir"}
_PARAM_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_filter_key(key: str) -> tuple[list[str], str]:
    m = _PARAM_RE.match(key)
    if not m:
        raise _bad(f"Malformed query parameter '{key}'")
    parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
    op = "eq"
    if len(parts) > 1 and parts[-1].replace("-", "_") in OPS:
        op = parts.pop().replace("-", "_")
    if any(p == "" for p in parts):
        raise _bad(f"Malformed query parameter '{key}'")
    return [_norm(p) for p in parts], op


def _values(obj: Any, path: list[str]) -> list[Any]:
    """All values at path (lists fan out: order-lines[account][code] matches any line)."""
    cur = [obj]
    for name in path:
        nxt = []
        for o in cur:
            if isinstance(o, list):
                o_list = o
            else:
                o_list = [o]
            for item in o_list:
                if isinstance(item, dict):
                    v = item.get(name)
                    if isinstance(v, list) and name != path[-1]:
                        nxt.extend(v)
                    else:
                        nxt.append(v)
        cur = nxt
    out: list[Any] = []
    for v in cur:
        out.extend(v if isinstance(v, list) else [v])
    return out or [None]


def _coerce_pair(actual: Any, raw: str, attr: str, ordered: bool = False) -> tuple[Any, Any] | None:
    """Return comparable (actual, wanted); None when actual is null."""
    if actual is None:
        return None
    if isinstance(actual, bool):
        low = raw.strip().lower()
        if low not in ("true", "false", "1", "0"):
            raise _bad(f"'{raw}' is not a boolean for {attr}")
        return actual, low in ("true", "1")
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        try:
            return Decimal(str(actual)), Decimal(raw)
        except InvalidOperation:
            raise _bad(f"'{raw}' is not a number for {attr}") from None
    if isinstance(actual, dict):
        return None
    if _is_dt_attr(attr):
        want = parse_dt(raw)
        if want is None:
            raise _bad(f"'{raw}' is not a valid ISO 8601 date/time for {attr} (encode '+' as %2B)")
        have = parse_dt(actual)
        return (have, want) if have is not None else None
    sval = str(actual)
    # decimal strings ("989.00") compare numerically for gt/lt/...; equality stays textual
    if ordered and _NUM_RE.fullmatch(sval) and _NUM_RE.fullmatch(raw.strip()):
        return Decimal(sval), Decimal(raw.strip())
    return sval, raw


_NUM_RE = re.compile(r"-?\d+(\.\d+)?")


def _match_one(actual: Any, op: str, raw: str, attr: str) -> bool:
    if op == "blank":
        want_blank = raw.strip().lower() in ("true", "1", "")
        is_blank = actual is None or actual == "" or actual == [] or actual == {}
        return is_blank == want_blank
    if op in ("in", "not_in"):
        options = [o for o in raw.split(",")]
        hit = False
        for o in options:
            pair = _coerce_pair(actual, o, attr)
            if pair is not None and pair[0] == pair[1]:
                hit = True
                break
        if actual is None:
            hit = False
        return hit if op == "in" else not hit
    if op in ("contains", "starts_with", "ends_with"):
        if actual is None or isinstance(actual, (dict, list)):
            return False
        a, w = str(actual).lower(), raw.lower()
        return (w in a) if op == "contains" else a.startswith(w) if op == "starts_with" else a.endswith(w)
    pair = _coerce_pair(actual, raw, attr, ordered=op in ("gt", "lt", "gt_or_eq", "lt_or_eq"))
    if pair is None:
        if op == "eq":
            return raw.lower() in ("null", "nil")
        return op == "not_eq"
    a, w = pair
    try:
        if op == "eq":
            return a == w
        if op == "not_eq":
            return a != w
        if op == "gt":
            return a > w
        if op == "lt":
            return a < w
        if op == "gt_or_eq":
            return a >= w
        if op == "lt_or_eq":
            return a <= w
    except TypeError:
        return False
    raise _bad(f"Unknown operator '{op}'")


def build_filters(resource: str, params: list[tuple[str, str]], known: set[str]) -> list[Callable[[dict], bool]]:
    preds: list[Callable[[dict], bool]] = []
    for key, raw in params:
        if key in IGNORED_PARAMS:
            continue
        path, op = parse_filter_key(key)
        top = path[0]
        if top not in known:
            # supplier_id=4 style: "<assoc>-id" == assoc[id]
            if top.endswith("-id") and top[:-3] in known and len(path) == 1:
                path = [top[:-3], "id"]
            else:
                raise _bad(
                    f"Unknown attribute '{key}' for {resource}; filterable attributes: " + ", ".join(sorted(known))
                )
        attr = path[-1]

        def pred(rec: dict, path=path, op=op, raw=raw, attr=attr) -> bool:
            vals = _values(rec, path)
            if op == "not_in" or op == "not_eq":
                return all(_match_one(v, op, raw, attr) for v in vals)
            return any(_match_one(v, op, raw, attr) for v in vals)

        preds.append(pred)
    return preds


def _validate_filter_values(preds: list[Callable[[dict], bool]], sample: dict | None) -> None:
    """Force value-format errors (bad dates, booleans) even when the store is empty."""
    if sample is not None:
        for p in preds:
            p(sample)
