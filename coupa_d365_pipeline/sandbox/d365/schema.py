"""Entity schemas of the D365 F&O sandbox, loaded from ``coupa_d365_pipeline/d365/entities.json``.

The JSON comes from a real F&O ``$metadata`` (see /work/shared/reference/d365-fo-api.md, [META]):
entity set -> keys, properties (Edm type + nullability) and enum members per property.

This module validates and coerces JSON payload values per Edm type the way the OData layer of F&O
does, and produces the default value every property has when a record is read back (F&O never
returns ``null`` for a scalar: strings are ``""``, numbers ``0``, dates ``1900-01-01T12:00:00Z``,
enums their first member, e.g. ``"No"``).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

NAMESPACE = "Microsoft.Dynamics.DataEntities."
EMPTY_DATE = "1900-01-01T12:00:00Z"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
# One copy of the real F&O schema serves the client (coupa_d365_pipeline/d365/entities.json) and the sandbox.
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "d365" / "entities.json"

_INT_RANGES = {"Edm.Int32": (-(2**31), 2**31 - 1), "Edm.Int64": (-(2**63), 2**63 - 1)}
_DT_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|z|[+-]\d{2}:\d{2})?)?$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ValueConversionError(ValueError):
    """A payload value does not fit its property (an ``ODataException`` in real F&O, HTTP 400)."""


def parse_datetime(text: str) -> datetime:
    """Parse an ISO-8601 date or date-time into an aware UTC datetime (naive = UTC)."""
    m = _DT_RE.match(text.strip())
    if not m:
        raise ValueError(text)
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    micro = int((frac or ".0")[1:7].ljust(6, "0"))
    dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), micro)
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 60 + int(tz[4:6]))
        dt = dt - timedelta(minutes=offset)
    return dt.replace(tzinfo=UTC)


def format_datetime(dt: datetime) -> str:
    dt = dt.astimezone(UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0") + "Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_datetime(value: str | datetime | date) -> str:
    """Canonical text form of a DateTimeOffset; a date-only value becomes 12:00:00Z like F&O dates."""
    if isinstance(value, datetime):
        return format_datetime(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return f"{value.isoformat()}T12:00:00Z"
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        parse_datetime(text)
        return f"{text}T12:00:00Z"
    return format_datetime(parse_datetime(text))


@dataclass(frozen=True)
class PropertyDef:
    name: str
    type: str
    nullable: bool
    enum_members: tuple[str, ...] = ()

    @property
    def is_enum(self) -> bool:
        return self.type.startswith(NAMESPACE)

    @property
    def type_label(self) -> str:
        return f"{self.type}[Nullable={'True' if self.nullable else 'False'}]"

    def default(self) -> Any:
        t = self.type
        if self.is_enum:
            return self.enum_members[0] if self.enum_members else ""
        if t == "Edm.String":
            return ""
        if t == "Edm.Decimal" or t == "Edm.Double":
            return Decimal(0)
        if t in _INT_RANGES:
            return 0
        if t == "Edm.DateTimeOffset":
            return EMPTY_DATE
        if t == "Edm.Boolean":
            return False
        if t == "Edm.Guid":
            return ZERO_GUID
        return None  # Edm.Binary and unknown types

    def coerce(self, value: Any) -> Any:
        """Validate a JSON value for this property and return the stored Python value."""
        t = self.type
        if value is None:
            if not self.nullable:
                raise ValueConversionError(
                    f"A null value was found for the property named '{self.name}', which has the expected type "
                    f"'{self.type_label}'. The expected type '{self.type_label}' does not allow null values."
                )
            return self.default()
        bad = ValueConversionError(
            f"Cannot convert a primitive value to the expected type '{t}'. See the inner exception for more details."
        )
        if self.is_enum:
            if isinstance(value, str) and value in self.enum_members:
                return value
            if isinstance(value, str):
                # ODataLib accepts the member name only (case-sensitive).
                raise ValueConversionError(
                    f"The value '{value}' is not a valid enum constant for type '{t}'; valid members: "
                    f"{', '.join(self.enum_members)}."
                )
            raise ValueConversionError(
                f"Cannot read the value '{value}' as a quoted JSON string value "
                f"for property '{self.name}' of enum type '{t}'."
            )
        if t == "Edm.String":
            if not isinstance(value, str):
                raise bad
            return value
        if t in ("Edm.Decimal", "Edm.Double"):
            if isinstance(value, bool):
                raise bad
            if isinstance(value, (int, Decimal)):
                return Decimal(value)
            if isinstance(value, float):
                return Decimal(repr(value))
            if isinstance(value, str):  # IEEE754Compatible=true style
                try:
                    d = Decimal(value.strip())
                except InvalidOperation:
                    raise bad from None
                if not d.is_finite():
                    raise bad
                return d
            raise bad
        if t in _INT_RANGES:
            lo, hi = _INT_RANGES[t]
            if isinstance(value, bool):
                raise bad
            if isinstance(value, Decimal) and value == value.to_integral_value():
                value = int(value)
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            elif isinstance(value, str) and t == "Edm.Int64" and re.fullmatch(r"-?\d+", value.strip()):
                value = int(value)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise bad
            return value
        if t == "Edm.DateTimeOffset":
            if not isinstance(value, str):
                raise bad
            try:
                m = _DT_RE.match(value.strip())
                if not m or (m.group(4) is not None and m.group(8) is None):
                    # date-times need an offset ("Z"); a bare date is accepted
                    raise ValueError(value)
                return normalize_datetime(value)
            except ValueError:
                raise ValueConversionError(
                    f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'."
                ) from None
        if t == "Edm.Boolean":
            if not isinstance(value, bool):
                raise bad
            return value
        if t == "Edm.Guid":
            if not isinstance(value, str) or not _GUID_RE.match(value):
                raise bad
            return value.lower()
        if t == "Edm.Binary":
            if not isinstance(value, str):
                raise bad
            try:
                base64.b64decode(value, validate=True)
            except Exception:
                raise bad from None
            return value
        return value


# String sizes of the standard F&O EDTs behind the text fields the connector writes. The schema file
# carries no MaxLength (see the README next to it). The sandbox keeps its own copy of this table so it
# stays independent of connector code (mapping/limits.py holds the connector's). How real F&O answers
# an over-long value through OData (refusal or silent truncation) is UNCONFIRMED; the sandbox refuses,
# so a connector that sends one is caught.
STRING_MAX_LENGTH: dict[str, dict[str, int]] = {
    "VendorInvoiceHeaders": {"InvoiceNumber": 20, "InvoiceAccount": 20, "Currency": 3},
    "VendorInvoiceLines": {"ItemNumber": 20, "Currency": 3, "PurchaseOrder": 20},
    "VendorsV2": {
        "VendorAccountNumber": 20,
        "VendorOrganizationName": 100,
        "AddressCity": 60,
        "AddressZipCode": 10,
        "AddressStreet": 250,
        "CurrencyCode": 3,
    },
    "PurchaseOrderHeadersV2": {
        "PurchaseOrderNumber": 20,
        "OrderVendorAccountNumber": 20,
        "InvoiceVendorAccountNumber": 20,
        "CurrencyCode": 3,
    },
    "PurchaseOrderLinesV2": {"PurchaseOrderNumber": 20, "ItemNumber": 20},
}
_NUL_OR_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(entity_set: str, name: str, value: str) -> None:
    """Refuse text a field cannot hold: longer than its EDT, or with a control character other
    than tab/line breaks (NUL among them)."""
    bad = _NUL_OR_CONTROL.search(value)
    if bad:
        raise ValueConversionError(
            f"The value for property '{name}' contains the control character "
            f"U+{ord(bad.group()):04X}, which the field cannot hold."
        )
    limit = STRING_MAX_LENGTH.get(entity_set, {}).get(name)
    if limit is not None and len(value) > limit:
        raise ValueConversionError(
            f"The value for property '{name}' is too long: {len(value)} characters, the field holds at most {limit}."
        )


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("sV2") or name.endswith("sV3"):
        return name[:-3] + name[-2:]
    if name.endswith("s"):
        return name[:-1]
    return name


@dataclass
class EntitySchema:
    name: str
    keys: list[str]
    properties: dict[str, PropertyDef]
    type_name: str = ""
    enums: dict[str, list[str]] = field(default_factory=dict)

    @property
    def full_type_name(self) -> str:
        return NAMESPACE + self.type_name

    @property
    def company_scoped(self) -> bool:
        return "dataAreaId" in self.keys

    def defaults(self) -> dict[str, Any]:
        return {name: p.default() for name, p in self.properties.items()}

    def coerce(self, name: str, value: Any) -> Any:
        return self.properties[name].coerce(value)

    def full_record(self, partial: dict[str, Any]) -> dict[str, Any]:
        """Coerce ``partial`` and fill every other property with its F&O default."""
        rec = self.defaults()
        for k, v in partial.items():
            if k not in self.properties:
                raise ValueConversionError(self.unknown_property_message(k))
            rec[k] = self.coerce(k, v)
        return rec

    def unknown_property_message(self, name: str) -> str:
        return (
            f"The property '{name}' does not exist on type '{self.full_type_name}'. Make sure to only use property "
            "names that are defined by the type or mark the type as open type."
        )


@dataclass
class D365Schema:
    entity_sets: dict[str, EntitySchema]

    def __contains__(self, name: str) -> bool:
        return name in self.entity_sets

    def __getitem__(self, name: str) -> EntitySchema:
        return self.entity_sets[name]

    def get(self, name: str) -> EntitySchema | None:
        return self.entity_sets.get(name)


def parse_schema(raw: dict[str, Any]) -> D365Schema:
    sets: dict[str, EntitySchema] = {}
    for name, spec in raw["entity_sets"].items():
        enums = spec.get("enums", {}) or {}
        props = {
            pname: PropertyDef(pname, p["type"], bool(p.get("nullable", True)), tuple(enums.get(pname, ())))
            for pname, p in spec["properties"].items()
        }
        type_name = spec.get("entity_type") or spec.get("entity_type_guess") or _singular(name)
        sets[name] = EntitySchema(name, list(spec["keys"]), props, type_name, {k: list(v) for k, v in enums.items()})
    return D365Schema(sets)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> D365Schema:
    with open(path, encoding="utf-8") as fh:
        return parse_schema(json.load(fh))


def load_schema(path: str | Path | None = None) -> D365Schema:
    """Load (and cache) the schema file; default is the package copy of the real F&O schema."""
    return _load_cached(str(Path(path) if path is not None else SCHEMA_FILE))


def new_guid() -> str:
    return str(uuid.uuid4())
