"""A small, safe recursive-descent parser and evaluator for the OData ``$filter`` subset F&O supports.

Supported (per d365-fo-api.md §2.3): ``eq ne gt ge lt le``, ``and or not``, parentheses, string
literals in single quotes (``''`` escapes a quote), numbers (int/decimal, negative), ``true``,
``false``, ``null``, unquoted DateTimeOffset/Date literals (``2026-01-01T00:00:00Z``), GUID literals,
enum literals ``Microsoft.Dynamics.DataEntities.NoYes'Yes'`` (``eq``/``ne`` only) and the F&O
wildcard string equality ``eq '*text*'`` / ``'text*'`` / ``'*text'``.

``has`` and ``in`` are rejected like F&O does; arithmetic operators and functions (``contains()``…)
are rejected as unsupported by the sandbox. String comparisons are case-insensitive, as on the SQL
Server collation behind F&O. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .schema import NAMESPACE, parse_datetime


class ODataFilterError(ValueError):
    """A ``$filter`` that F&O would answer with HTTP 400; ``str(err)`` is the OData error message."""

    status = 400


_COMPARISON = {"eq", "ne", "gt", "ge", "lt", "le"}
_ARITH = {"add", "sub", "mul", "div", "divby", "mod"}
_OP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}

_TOKEN_RES: list[tuple[str, re.Pattern[str]]] = [
    ("WS", re.compile(r"\s+")),
    ("ENUM", re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)'((?:[^']|'')*)'")),
    ("STRING", re.compile(r"'((?:[^']|'')*)'")),
    ("DATETIME", re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|z|[+-]\d{2}:\d{2})")),
    ("GUID", re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])")),
    ("DATE", re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:])")),
    ("NUMBER", re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?(?![\w.])")),
    ("IDENT", re.compile(r"[A-Za-z_$][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")),
    ("LPAREN", re.compile(r"\(")),
    ("RPAREN", re.compile(r"\)")),
    ("COMMA", re.compile(r",")),
]


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int
    value: Any = None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        for kind, rx in _TOKEN_RES:
            m = rx.match(text, pos)
            if not m:
                continue
            if kind == "WS":
                pass
            elif kind == "STRING":
                tokens.append(Token(kind, m.group(0), pos, m.group(1).replace("''", "'")))
            elif kind == "ENUM":
                tokens.append(Token(kind, m.group(0), pos, (m.group(1), m.group(2).replace("''", "'"))))
            elif kind == "NUMBER":
                raw = m.group(0)
                num = raw.rstrip("mMdDfFlL")
                tokens.append(Token(kind, raw, pos, Decimal(num)))
            else:
                tokens.append(Token(kind, m.group(0), pos))
            pos = m.end()
            break
        else:
            if text[pos] == "'":
                raise ODataFilterError(f"Unterminated string literal at position {pos} in '{text}'.")
            raise ODataFilterError(f"Syntax error: character '{text[pos]}' is not valid at position {pos} in '{text}'.")
    return tokens


# --- AST -------------------------------------------------------------------------------------
# ("prop", name) | ("lit", kind, value) | ("cmp", op, left, right) | ("and", l, r) | ("or", l, r) | ("not", x)


class _Parser:
    def __init__(
        self, text: str, properties: Mapping[str, str], type_name: str, enum_members: Mapping[str, Sequence[str]] | None
    ) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.properties = properties
        self.type_name = type_name
        self.enum_members = enum_members or {}

    # helpers
    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def peek_word(self) -> str | None:
        tok = self.peek()
        return tok.text if tok is not None and tok.kind == "IDENT" else None

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, what: str, tok: Token | None = None) -> ODataFilterError:
        if tok is None:
            return ODataFilterError(f"Syntax error at position {len(self.text)} in '{self.text}': {what}.")
        return ODataFilterError(f"Syntax error at position {tok.pos} in '{self.text}': {what}.")

    # grammar
    def parse(self) -> tuple:
        if not self.tokens:
            raise ODataFilterError("The $filter expression is empty.")
        node = self.parse_or()
        tok = self.peek()
        if tok is not None:
            if tok.kind == "IDENT" and tok.text in ("has", "in"):
                raise self._unsupported(tok.text)
            raise self.error(f"unexpected '{tok.text}'", tok)
        self._require_boolean(node)
        return node

    def _unsupported(self, op: str) -> ODataFilterError:
        return ODataFilterError(
            f"The '{op}' operator is not supported. F&O OData supports eq, ne, gt, ge, lt, le, and, or, not."
        )

    def parse_or(self) -> tuple:
        left = self.parse_and()
        while self.peek_word() == "or":
            self.advance()
            right = self.parse_and()
            self._require_boolean(left)
            self._require_boolean(right)
            left = ("or", left, right)
        return left

    def parse_and(self) -> tuple:
        left = self.parse_unary()
        while self.peek_word() == "and":
            self.advance()
            right = self.parse_unary()
            self._require_boolean(left)
            self._require_boolean(right)
            left = ("and", left, right)
        return left

    def parse_unary(self) -> tuple:
        if self.peek_word() == "not":
            self.advance()
            operand = self.parse_unary()
            self._require_boolean(operand)
            return ("not", operand)
        return self.parse_comparison()

    def parse_comparison(self) -> tuple:
        left = self.parse_primary()
        word = self.peek_word()
        if word in ("has", "in"):
            raise self._unsupported(word)
        if word in _ARITH:
            raise ODataFilterError(f"The arithmetic operator '{word}' is not supported by the sandbox.")
        if word in _COMPARISON:
            op_tok = self.advance()
            right = self.parse_primary()
            nxt = self.peek_word()
            if nxt in ("has", "in"):
                raise self._unsupported(nxt)
            return self._check_comparison(op_tok.text, left, right)
        return left

    def parse_primary(self) -> tuple:
        tok = self.peek()
        if tok is None:
            raise self.error("expression expected")
        if tok.kind == "LPAREN":
            self.advance()
            node = self.parse_or()
            closing = self.peek()
            if closing is None or closing.kind != "RPAREN":
                raise self.error("')' expected", closing)
            self.advance()
            return node
        self.advance()
        if tok.kind == "STRING":
            return ("lit", "string", tok.value)
        if tok.kind == "NUMBER":
            return ("lit", "number", tok.value)
        if tok.kind in ("DATETIME", "DATE"):
            try:
                return ("lit", "datetime", parse_datetime(tok.text))
            except ValueError:
                raise self.error(f"invalid date-time literal '{tok.text}'", tok) from None
        if tok.kind == "GUID":
            return ("lit", "guid", tok.text.lower())
        if tok.kind == "ENUM":
            type_name, member = tok.value
            return ("lit", "enum", (type_name, member))
        if tok.kind == "IDENT":
            word = tok.text
            if word == "true":
                return ("lit", "bool", True)
            if word == "false":
                return ("lit", "bool", False)
            if word == "null":
                return ("lit", "null", None)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "LPAREN":
                raise ODataFilterError(f"The function '{word}' is not supported; use the wildcard form eq '*text*'.")
            if word in _COMPARISON or word in ("and", "or", "not"):
                raise self.error(f"expression expected before '{word}'", tok)
            if "/" in word:
                raise ODataFilterError(f"Navigation paths in $filter ('{word}') are not supported by the sandbox.")
            if word not in self.properties:
                raise ODataFilterError(
                    f"Could not find a property named '{word}' on type '{NAMESPACE}{self.type_name}'."
                )
            return ("prop", word)
        raise self.error(f"unexpected '{tok.text}'", tok)

    # typing
    def _kind(self, node: tuple) -> str:
        """Operand kind: string number bool datetime guid enum:<Type> null binary boolexpr."""
        if node[0] == "lit":
            if node[1] == "enum":
                return "enum:" + node[2][0]
            return node[1]
        if node[0] == "prop":
            t = self.properties[node[1]]
            if t.startswith(NAMESPACE):
                return "enum:" + t
            return {
                "Edm.String": "string",
                "Edm.Decimal": "number",
                "Edm.Double": "number",
                "Edm.Int32": "number",
                "Edm.Int64": "number",
                "Edm.Boolean": "bool",
                "Edm.DateTimeOffset": "datetime",
                "Edm.Date": "datetime",
                "Edm.Guid": "guid",
            }.get(t, "binary")
        return "boolexpr"

    def _edm(self, node: tuple) -> str:
        if node[0] == "prop":
            return self.properties[node[1]]
        kind = self._kind(node)
        return {
            "string": "Edm.String",
            "number": "Edm.Decimal",
            "bool": "Edm.Boolean",
            "datetime": "Edm.DateTimeOffset",
            "guid": "Edm.Guid",
            "null": "<null>",
            "boolexpr": "Edm.Boolean",
        }.get(kind, kind.removeprefix("enum:"))

    def _require_boolean(self, node: tuple) -> None:
        kind = self._kind(node)
        if kind not in ("boolexpr", "bool"):
            raise ODataFilterError(
                f"The $filter expression must evaluate to a single boolean value; "
                f"found an operand of type '{self._edm(node)}'."
            )

    def _check_comparison(self, op: str, left: tuple, right: tuple) -> tuple:
        lk, rk = self._kind(left), self._kind(right)
        incompatible = ODataFilterError(
            f"A binary operator with incompatible types was detected. Found operand types '{self._edm(left)}' and "
            f"'{self._edm(right)}' for operator kind '{_OP_KIND[op]}'."
        )
        if "boolexpr" in (lk, rk):
            if not (op in ("eq", "ne") and {lk, rk} <= {"boolexpr", "bool"}):
                raise incompatible
        elif "null" in (lk, rk):
            if op not in ("eq", "ne"):
                raise incompatible
        elif lk.startswith("enum:") or rk.startswith("enum:"):
            if op not in ("eq", "ne"):
                raise ODataFilterError(
                    f"Enum values only support the eq and ne operators; '{op}' was used on '{self._edm(left)}'."
                )
            # enum literal vs enum property of the same type; a plain string literal is promoted.
            enum_type = lk if lk.startswith("enum:") else rk
            other = rk if enum_type is lk else lk
            if other not in (enum_type, "string"):
                raise incompatible
            for node in (left, right):
                if node[0] == "prop" and self._kind(node).startswith("enum:"):
                    members = self.enum_members.get(node[1])
                    lit = right if node is left else left
                    member = None
                    if lit[0] == "lit":
                        member = lit[2][1] if lit[1] == "enum" else lit[2]
                    if members and member is not None and member not in members:
                        raise ODataFilterError(
                            f"The string '{member}' is not a valid enumeration type constant for type "
                            f"'{self._edm(node)}'."
                        )
        elif lk != rk and not ({lk, rk} == {"guid", "string"}):
            raise incompatible
        elif lk in ("bool", "guid", "binary") and op not in ("eq", "ne"):
            raise incompatible
        return ("cmp", op, left, right)


def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in pattern.split("*")]
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _value_of(node: tuple, record: Mapping[str, Any], properties: Mapping[str, str]) -> Any:
    if node[0] == "lit":
        if node[1] == "enum":
            return node[2][1]
        return node[2]
    name = node[1]
    value = record.get(name)
    t = properties[name]
    if value is None:
        return None
    if t in ("Edm.DateTimeOffset", "Edm.Date") and isinstance(value, str):
        try:
            return parse_datetime(value)
        except ValueError:
            return None
    if t in ("Edm.Decimal", "Edm.Double", "Edm.Int32", "Edm.Int64") and not isinstance(value, Decimal):
        try:
            return Decimal(str(value))
        except Exception:
            return None
    return value


def _compare(op: str, a: Any, b: Any, wildcard: str | None = None) -> bool:
    if wildcard is not None:
        matched = isinstance(a, str) and _wildcard_regex(wildcard).match(a) is not None
        if op == "eq":
            return matched
        if op == "ne":
            return not matched
    if isinstance(a, str) and isinstance(b, str):
        a, b = a.casefold(), b.casefold()
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if a is None or b is None:
        return False
    try:
        if op == "gt":
            return a > b
        if op == "ge":
            return a >= b
        if op == "lt":
            return a < b
        if op == "le":
            return a <= b
    except TypeError:
        return False
    return False


def _evaluate(node: tuple, record: Mapping[str, Any], properties: Mapping[str, str]) -> Any:
    tag = node[0]
    if tag == "and":
        return bool(_evaluate(node[1], record, properties)) and bool(_evaluate(node[2], record, properties))
    if tag == "or":
        return bool(_evaluate(node[1], record, properties)) or bool(_evaluate(node[2], record, properties))
    if tag == "not":
        return not bool(_evaluate(node[1], record, properties))
    if tag == "cmp":
        _, op, left, right = node
        if left[0] in ("cmp", "and", "or", "not") or right[0] in ("cmp", "and", "or", "not"):
            a = _evaluate(left, record, properties)
            b = _evaluate(right, record, properties)
            return _compare(op, a, b)
        a = _value_of(left, record, properties)
        b = _value_of(right, record, properties)
        wildcard = None
        if op in ("eq", "ne") and left[0] == "prop" and right[0] == "lit" and right[1] == "string" and "*" in right[2]:
            wildcard = right[2]
        elif op in ("eq", "ne") and right[0] == "prop" and left[0] == "lit" and left[1] == "string" and "*" in left[2]:
            wildcard = left[2]
            a, b = b, a
        return _compare(op, a, b, wildcard)
    if tag == "lit":
        return node[2]
    return _value_of(node, record, properties)


@dataclass
class ODataFilter:
    text: str
    ast: tuple
    properties: Mapping[str, str]

    def matches(self, record: Mapping[str, Any]) -> bool:
        return bool(_evaluate(self.ast, record, self.properties))

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return self.matches(record)


def parse_filter(
    text: str,
    properties: Mapping[str, str],
    type_name: str = "Entity",
    enum_members: Mapping[str, Sequence[str]] | None = None,
) -> ODataFilter:
    """Parse ``text`` for an entity whose properties map name -> Edm type (or enum type).

    Raises :class:`ODataFilterError` (HTTP 400 in the sandbox) for syntax errors, unknown
    properties, type mismatches and unsupported operators.
    """
    parser = _Parser(text, properties, type_name, enum_members)
    return ODataFilter(text, parser.parse(), properties)


def compile_filter(
    text: str,
    properties: Mapping[str, str],
    type_name: str = "Entity",
    enum_members: Mapping[str, Sequence[str]] | None = None,
) -> Callable[[Mapping[str, Any]], bool]:
    return parse_filter(text, properties, type_name, enum_members).matches


__all__ = ["ODataFilter", "ODataFilterError", "compile_filter", "parse_filter", "tokenize"]
