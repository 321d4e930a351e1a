"""The YAML mapping between Coupa and D365 F&O (pydantic v2 models + ``load_mapping``).

Every problem in a mapping file is reported as a :class:`MappingError` whose message names the
YAML key path (``dimensions.segments.CostCenter``) and says how to fix it. All problems of a file
are reported at once, one per line.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coupa_d365_pipeline.d365.schema import entity_set

__all__ = [
    "MappingError",
    "MappingConfig",
    "VendorAccountConfig",
    "DimensionsConfig",
    "load_mapping",
    "parse_mapping",
    "example_mapping_path",
    "COUPA_SEGMENTS",
]

COUPA_SEGMENTS = tuple(f"segment-{i}" for i in range(1, 21))
COUPA_CUSTOM_FIELD_SOURCES = ("d365_voucher", "d365_invoice_number")
_DATA_AREA_RE = re.compile(r"^[A-Za-z0-9]{1,4}$")
_SEGMENT_HINT = "use segment-1 … segment-20"
# Set by map_vendor itself; a default for them would be ignored or conflict.
_VENDOR_FIELDS_SET_BY_MAPPING = ("dataAreaId", "VendorAccountNumber")


class MappingError(ValueError):
    """The mapping file is missing, unreadable or invalid; the message says where and how to fix it."""


def _check_data_area(value: str) -> str:
    if not isinstance(value, str) or not _DATA_AREA_RE.match(value):
        raise ValueError(f"{value!r} is not a dataAreaId (1-4 letters/digits); use the D365 company id, e.g. usmf")
    return value.lower()


def _check_segment(value: str) -> str:
    if value not in COUPA_SEGMENTS:
        raise ValueError(f"{value!r} is not a Coupa account segment; {_SEGMENT_HINT}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VendorAccountConfig(_Strict):
    """How the D365 VendorAccountNumber is derived from a Coupa supplier."""

    source: Literal["supplier_number", "prefix_id"] = "supplier_number"
    prefix: str | None = None


class DimensionsConfig(_Strict):
    """The D365 default dimension format ("integrating applications") and where Coupa holds each value."""

    order: list[str]
    main_account_segment: str = "segment-1"
    segments: dict[str, str] = Field(default_factory=dict)
    delimiter: str = "-"

    @field_validator("main_account_segment")
    @classmethod
    def _main_segment(cls, v: str) -> str:
        return _check_segment(v)


class MappingConfig(_Strict):
    """The whole mapping file. ``legal_entities`` values are stored lower-case."""

    legal_entities: dict[str, str]
    default_legal_entity: str | None = None
    vendor_account: VendorAccountConfig = Field(default_factory=VendorAccountConfig)
    vendor_defaults: dict[str, dict[str, Any]] = Field(default_factory=dict)
    payment_terms: dict[str, str] = Field(default_factory=dict)
    dimensions: DimensionsConfig
    items: dict[str, str] = Field(default_factory=dict)
    procurement_category: dict[str, str] = Field(default_factory=dict)
    country_regions: dict[str, str] = Field(default_factory=dict)
    # Coupa invoice custom fields (API-editable) filled when D365 posts the invoice:
    # {d365_voucher: cf-erp-voucher, d365_invoice_number: cf-erp-invoice-number}
    coupa_custom_fields: dict[str, str] = Field(default_factory=dict)

    # ------------------------------------------------------------------ lookups
    def legal_entity(self, account_type_name: str | None) -> str | None:
        """dataAreaId for a Coupa chart of accounts (exact name first, then case/space-insensitive)."""
        if not account_type_name:
            return None
        le = self.legal_entities.get(account_type_name)
        if le is not None:
            return le
        wanted = _norm(account_type_name)
        for name, le in self.legal_entities.items():
            if _norm(name) == wanted:
                return le
        return None

    def payment_terms_name(self, coupa_code: str) -> str:
        return self.payment_terms.get(coupa_code, coupa_code)

    def item_number(self, coupa_item_number: str) -> str:
        return self.items.get(coupa_item_number, coupa_item_number)

    def category_name(self, coupa_commodity: str) -> str:
        return self.procurement_category.get(coupa_commodity, coupa_commodity)

    def country_region(self, coupa_country_code: str) -> str:
        return self.country_regions.get(coupa_country_code, coupa_country_code)

    @property
    def mapped_legal_entities(self) -> list[str]:
        return sorted(set(self.legal_entities.values()))


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def _key(part: Any) -> str:
    s = str(part)
    return s if re.fullmatch(r"[A-Za-z0-9_\-]+", s) else f"'{s}'"


def _path(*parts: Any) -> str:
    return ".".join(_key(p) for p in parts)


_ALLOWED_TOP = tuple(MappingConfig.model_fields)
_FIX_BY_TYPE = {
    "missing": "add it",
    "string_type": "write a quoted string",
    "dict_type": "write a mapping (key: value)",
    "list_type": "write a list, e.g. [A, B]",
    "literal_error": "",
}


def _pydantic_problems(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = e["loc"]
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = loc[:-1]
            allowed = (
                _ALLOWED_TOP
                if not parent
                else tuple(
                    {"vendor_account": VendorAccountConfig, "dimensions": DimensionsConfig}.get(
                        str(parent[0]), MappingConfig
                    ).model_fields
                )
            )
            where = _path(*parent) if parent else "top level"
            out.append(f"{_path(*loc)}: unknown key at {where}; allowed keys are {', '.join(allowed)}")
            continue
        if e["type"] == "literal_error" and loc and loc[-1] == "source":
            out.append(
                f"{_path(*loc)}: {e.get('input')!r} is not a vendor account source; use supplier_number or prefix_id"
            )
            continue
        if loc and loc[-1] == "[key]":
            out.append(f"{_path(*loc[:-1])}: the key {loc[-2]!r} must be a string; quote it")
            continue
        fix = _FIX_BY_TYPE.get(e["type"], "")
        out.append(f"{_path(*loc)}: {msg}" + (f"; {fix}" if fix else ""))
    return out


def _cross_checks(cfg: MappingConfig) -> tuple[MappingConfig, list[str]]:
    problems: list[str] = []
    les: dict[str, str] = {}
    for name, value in cfg.legal_entities.items():
        try:
            les[name] = _check_data_area(value)
        except ValueError as exc:
            problems.append(f"{_path('legal_entities', name)}: {exc}")
    if not cfg.legal_entities:
        problems.append("legal_entities: is empty; map at least one Coupa chart of accounts to a dataAreaId")
    mapped = set(les.values())
    allowed_les = ", ".join(sorted(mapped)) or "(none)"

    default = cfg.default_legal_entity
    if default is not None:
        default = default.lower()
        if default not in mapped:
            problems.append(
                f"default_legal_entity: {cfg.default_legal_entity!r} is not one of the mapped legal "
                f"entities; use one of {allowed_les} or add it under legal_entities"
            )

    va = cfg.vendor_account
    if va.source == "prefix_id" and not va.prefix:
        problems.append('vendor_account.prefix: is required when source is prefix_id; add e.g. prefix: "CP-"')
    if va.source == "supplier_number" and va.prefix:
        problems.append(
            "vendor_account.prefix: is only used with source: prefix_id; remove it or set source: prefix_id"
        )

    vendors_v2 = entity_set("VendorsV2")
    defaults: dict[str, dict[str, Any]] = {}
    for le, fields in cfg.vendor_defaults.items():
        le_l = str(le).lower()
        if le_l not in mapped:
            problems.append(
                f"{_path('vendor_defaults', le)}: {le!r} is not a mapped legal entity; use one of {allowed_les}"
            )
            continue
        if not isinstance(fields, dict):
            problems.append(
                f"{_path('vendor_defaults', le)}: write a mapping of VendorsV2 fields, "
                'e.g. {VendorGroupId: "10", CurrencyCode: USD}'
            )
            continue
        clean: dict[str, Any] = {}
        for fname, value in fields.items():
            where = _path("vendor_defaults", le, fname)
            if fname in _VENDOR_FIELDS_SET_BY_MAPPING:
                problems.append(f"{where}: is set by the connector; remove it")
                continue
            prop = vendors_v2.properties.get(fname)
            if prop is None:
                close = [p for p in vendors_v2.properties if p.lower() == str(fname).lower()]
                hint = f"did you mean {close[0]}?" if close else "names are case-sensitive VendorsV2 properties"
                problems.append(f"{where}: {fname!r} is not a VendorsV2 property; {hint}")
                continue
            if isinstance(value, (dict, list)):
                problems.append(f"{where}: must be a single value, not a {type(value).__name__}")
                continue
            if prop.get("type") == "Edm.String" and value is not None and not isinstance(value, str):
                value = str(value)  # VendorGroupId: 10 -> "10"
            members = vendors_v2.enums.get(fname)
            if members and value not in members:
                problems.append(f"{where}: {value!r} is not a {fname} value; use one of {', '.join(members)}")
                continue
            clean[fname] = value
        defaults[le_l] = clean

    dims = cfg.dimensions
    if not dims.order:
        problems.append(
            "dimensions.order: is empty; list the D365 default dimension format, "
            "e.g. [BusinessUnit, CostCenter, Department]"
        )
    if len(set(dims.order)) != len(dims.order):
        problems.append(f"dimensions.order: lists a dimension twice ({dims.order}); list each once")
    if not dims.delimiter:
        problems.append('dimensions.delimiter: is empty; use the D365 DimensionSegmentDelimiter, usually "-"')
    elif "\\" in dims.delimiter:
        problems.append("dimensions.delimiter: must not contain a backslash (it is the escape character)")
    seen_segments: dict[str, str] = {}
    for dim, seg in dims.segments.items():
        where = _path("dimensions", "segments", dim)
        if dim not in dims.order:
            problems.append(f"{where}: {dim!r} is not in dimensions.order; add it there or remove this key")
        if seg not in COUPA_SEGMENTS:
            problems.append(f"{where}: {seg!r} is not a Coupa account segment; {_SEGMENT_HINT}")
            continue
        if seg == dims.main_account_segment:
            problems.append(f"{where}: {seg} is already the main_account_segment; use another segment")
        if seg in seen_segments:
            problems.append(f"{where}: {seg} is also used by {seen_segments[seg]}; map each segment once")
        seen_segments[seg] = dim

    for name in cfg.coupa_custom_fields:
        if name not in COUPA_CUSTOM_FIELD_SOURCES:
            problems.append(
                f"{_path('coupa_custom_fields', name)}: unknown D365 value; use one of "
                f"{', '.join(COUPA_CUSTOM_FIELD_SOURCES)}"
            )
    for section in ("payment_terms", "items", "procurement_category", "country_regions", "coupa_custom_fields"):
        for k, v in getattr(cfg, section).items():
            if not str(v).strip():
                problems.append(f"{_path(section, k)}: is empty; give the D365 value or remove the entry")

    if problems:
        return cfg, problems
    cfg = cfg.model_copy(update={"legal_entities": les, "default_legal_entity": default, "vendor_defaults": defaults})
    return cfg, []


def parse_mapping(data: Any, source: str = "<mapping>") -> MappingConfig:
    """Validate an already-parsed YAML document; raises :class:`MappingError`."""
    if data is None:
        raise MappingError(f"{source}: the mapping is empty; start from coupa_d365_pipeline/examples/mapping.yaml")
    if not isinstance(data, dict):
        raise MappingError(
            f"{source}: the top level must be a mapping of keys "
            f"({', '.join(_ALLOWED_TOP)}), not a {type(data).__name__}"
        )
    unknown = [k for k in data if k not in _ALLOWED_TOP]
    problems = [f"{_path(k)}: unknown top-level key; allowed keys are {', '.join(_ALLOWED_TOP)}" for k in unknown]
    known = {k: v for k, v in data.items() if k in _ALLOWED_TOP}
    try:
        cfg = MappingConfig.model_validate(known)
    except ValidationError as exc:
        problems += _pydantic_problems(exc)
        raise MappingError(f"{source}: invalid mapping:\n" + "\n".join(problems)) from None
    cfg, more = _cross_checks(cfg)
    problems += more
    if problems:
        raise MappingError(f"{source}: invalid mapping:\n" + "\n".join(problems))
    return cfg


def example_mapping_path() -> Path:
    return Path(str(resources.files("coupa_d365_pipeline").joinpath("examples", "mapping.yaml")))


def load_mapping(path: str | Path | None = None) -> MappingConfig:
    """Load and validate a mapping YAML file (``None``: the bundled example)."""
    p = example_mapping_path() if path is None else Path(path)
    try:
        text = p.read_text("utf-8")
    except FileNotFoundError:
        raise MappingError(
            f"{p}: mapping file not found; set COUPA_D365_MAPPING_FILE to an existing file "
            "or copy coupa_d365_pipeline/examples/mapping.yaml"
        ) from None
    except OSError as exc:
        raise MappingError(f"{p}: cannot read the mapping file ({exc})") from None
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise MappingError(
            f"{p}: the mapping file (COUPA_D365_MAPPING_FILE) is not UTF-8 text (byte "
            f"0x{exc.object[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{p}: not valid YAML; fix the syntax ({exc})") from None
    return parse_mapping(data, str(p))
