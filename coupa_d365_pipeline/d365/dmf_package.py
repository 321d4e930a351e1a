"""Build a D365 F&O Data Management (DMF) import package in memory (plain Python; no Dagster).

A package is a ZIP holding ``Manifest.xml``, ``PackageHeader.xml`` and one data file per entity
(/work/shared/reference/d365-fo-api.md §7.1). What this module does, and why:

- **Entity names are DMF labels** ("Vendor invoice header", not ``VendorInvoiceHeaders``): any other
  name is answered with 400 "Entity <x> does not exist in the target environment" (§7.1 pitfall 2).
  The invoice labels are in the reference; the purchase-order labels ("Purchase order headers V2",
  "Purchase order lines V2") and the vendor label ("Vendors V2") are F&O's standard data-entity labels
  and are **not** in the reference.
- **Every entity carries an ``EntityMapList``** (one ``EntityMap`` per column): without it the import
  "succeeds" with zero rows (pitfall 1).
- **Data files are ``CSV-Unicode``**: UTF-16 LE with a byte-order mark (pitfall 3), **CRLF** line
  endings (pitfall 4), headers are the upper-case staging field names (pitfall 5), e.g.
  ``INVOICENUMBER`` for the OData property ``InvoiceNumber``.
- **No ``DATAAREAID`` column**: a package is imported into one legal entity (``legalEntityId`` of
  ``ImportFromPackage``, §7.2), so every row must belong to it; rows of another company are refused
  here. Build one package per legal entity.
- **Order**: vendors run at level 5, headers at level 10 and lines at level 20 of execution unit 1, so
  a header's vendor and a line's header exist before they are imported (third-party DMF template README, cited in §7.1).
- **Deterministic**: the same input gives byte-identical ZIP bytes (fixed member order and
  timestamps, columns in first-seen order with the entity keys first), so a package can be
  re-built after a crash and compared by its sha256.

Values are written as F&O reads them: ``Decimal``/``int`` as plain digits (never a float or an
exponent), ``bool`` as ``Yes``/``No`` (NoYes), ``None`` as an empty cell (the field keeps its default),
strings as they are (quoted by the CSV writer when they hold a comma, quote or line break).
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import pandas as pd
from pydantic import BaseModel, ConfigDict

from .schema import entity_set as schema_for

DMF_NAMESPACE = "http://schemas.microsoft.com/dynamics/2015/01/DataManagement"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
SOURCE_FORMAT = "CSV-Unicode"
MANIFEST_TYPE = "Microsoft.Dynamics.AX.Framework.Tools.DataManagement.Serialization.DataManagementPackageManifest"
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class DmfEntitySpec:
    """How one OData entity set appears in a package: its DMF label and its place in the run order."""

    entity_set: str
    label: str
    level: int  # LevelInExecutionUnit: headers before lines

    @property
    def file_name(self) -> str:
        return f"{self.label}.csv"

    @property
    def key_properties(self) -> tuple[str, ...]:
        """The entity key without ``dataAreaId`` (the company is the package's legal entity)."""
        return tuple(k for k in schema_for(self.entity_set).keys if k != "dataAreaId")


DMF_ENTITIES: dict[str, DmfEntitySpec] = {
    spec.entity_set: spec
    for spec in (
        DmfEntitySpec("VendorsV2", "Vendors V2", 5),  # the documents' new vendors, before their headers
        DmfEntitySpec("VendorInvoiceHeaders", "Vendor invoice header", 10),
        DmfEntitySpec("VendorInvoiceLines", "Vendor invoice line", 20),
        DmfEntitySpec("PurchaseOrderHeadersV2", "Purchase order headers V2", 10),
        DmfEntitySpec("PurchaseOrderLinesV2", "Purchase order lines V2", 20),
    )
}


def staging_field(prop: str) -> str:
    """The DMF staging column of an OData property: its name in upper case (``InvoiceNumber`` -> ``INVOICENUMBER``)."""
    return prop.upper()


def csv_value(value: Any) -> str:
    """A payload value as DMF reads it from a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a number DMF can import")
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"float {value!r} in a package: use Decimal for amounts (floats lose cents)")
    if isinstance(value, datetime):
        raise ValueError("datetime in a package: pass dates as the ISO text the OData payload uses")
    if isinstance(value, date):
        return f"{value.isoformat()}T12:00:00Z"
    return str(value)


class PackagedEntity(BaseModel):
    """One data file of a package: which rows it carries, identified by their entity keys."""

    model_config = ConfigDict(frozen=True)

    entity_set: str
    label: str
    file_name: str
    columns: tuple[str, ...]  # staging field names, in file order
    keys: tuple[tuple[Any, ...], ...]  # per row, the values of DmfEntitySpec.key_properties

    @property
    def row_count(self) -> int:
        return len(self.keys)


class DmfPackage(BaseModel):
    """A built package: the ZIP bytes and what is in them."""

    model_config = ConfigDict(frozen=True)

    legal_entity: str
    definition_group: str
    content: bytes
    entities: tuple[PackagedEntity, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def row_count(self) -> int:
        return sum(e.row_count for e in self.entities)

    def entity(self, entity_set: str) -> PackagedEntity | None:
        return next((e for e in self.entities if e.entity_set == entity_set), None)


def _columns(spec: DmfEntitySpec, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    schema = schema_for(spec.entity_set)
    seen: list[str] = list(spec.key_properties)
    for row in rows:
        unknown = schema.unknown_properties(row)
        if unknown:
            raise ValueError(
                f"{spec.entity_set} has no properties {unknown}; fix the mapping (names are case-sensitive)"
            )
        seen.extend(p for p in row if p not in seen and p != "dataAreaId" and not p.startswith("@odata."))
    return seen


def data_file(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The CSV-Unicode bytes: UTF-16 LE with BOM, CRLF line endings, staging field names as headers."""
    frame = pd.DataFrame(
        [[csv_value(row.get(c)) for c in columns] for row in rows],
        columns=[staging_field(c) for c in columns],
        dtype=object,
    )
    text = frame.to_csv(index=False, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    return b"\xff\xfe" + text.encode("utf-16-le")


def manifest_xml(definition_group: str, description: str, entities: Sequence[tuple[DmfEntitySpec, list[str]]]) -> str:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\r\n',
        f'<DataManagementPackageManifest xmlns:i="{XSI_NAMESPACE}" xmlns="{DMF_NAMESPACE}">\r\n',
        f"  <DefinitionGroupName>{escape(definition_group)}</DefinitionGroupName>\r\n",
        f"  <Description>{escape(description)}</Description>\r\n",
        "  <PackageEntityList>\r\n",
    ]
    for sequence, (spec, columns) in enumerate(entities, start=1):
        maps = "".join(
            "        <EntityMap><ArrayIndex>0</ArrayIndex>"
            f"<EntityField>{escape(staging_field(c))}</EntityField>"
            '<EntityFieldConversionList i:nil="true" /><IsAutoDefault>false</IsAutoDefault>'
            "<IsAutoGenerated>false</IsAutoGenerated><IsDefaultValueEqualNull>false</IsDefaultValueEqualNull>"
            f"<UseTextQualifier>false</UseTextQualifier><XMLField>{escape(staging_field(c))}</XMLField></EntityMap>\r\n"
            for c in columns
        )
        parts += [
            "    <DataManagementPackageEntityData>\r\n",
            "      <DefaultRefreshType>FullPush</DefaultRefreshType>\r\n",
            "      <Disable>false</Disable>\r\n",
            "      <EntityMapList>\r\n",
            maps,
            "      </EntityMapList>\r\n",
            f"      <EntityName>{escape(spec.label)}</EntityName>\r\n",
            "      <ExecutionUnit>1</ExecutionUnit>\r\n",
            f"      <InputFilePath>{escape(spec.file_name)}</InputFilePath>\r\n",
            f"      <LevelInExecutionUnit>{spec.level}</LevelInExecutionUnit>\r\n",
            f"      <SequenceInLevel>{sequence}</SequenceInLevel>\r\n",
            "      <SkipStaging>false</SkipStaging>\r\n",
            f"      <SourceFormat>{SOURCE_FORMAT}</SourceFormat>\r\n",
            "    </DataManagementPackageEntityData>\r\n",
        ]
    parts += ["  </PackageEntityList>\r\n", "</DataManagementPackageManifest>\r\n"]
    return "".join(parts)


def package_header_xml(description: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        f'<DataManagementPackageHeader xmlns:i="{XSI_NAMESPACE}" xmlns="{DMF_NAMESPACE}">\r\n'
        f"  <Description>{escape(description)}</Description>\r\n"
        f"  <ManifestType>{MANIFEST_TYPE}</ManifestType>\r\n"
        "  <PackageType>DefinitionGroup</PackageType>\r\n"
        "  <PackageVersion>2</PackageVersion>\r\n"
        "</DataManagementPackageHeader>\r\n"
    )


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIMESTAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_package(
    rows_by_entity: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    legal_entity: str,
    definition_group: str,
    description: str = "",
) -> DmfPackage:
    """A package importing ``rows_by_entity`` (OData entity set -> the payload dicts the OData path
    would POST) into ``legal_entity``. Entity sets without rows are left out; headers come before lines."""
    unsupported = sorted(set(rows_by_entity) - set(DMF_ENTITIES))
    if unsupported:
        raise ValueError(f"no DMF entity is configured for {unsupported}; supported: {sorted(DMF_ENTITIES)}")
    if not legal_entity:
        raise ValueError("a package needs the legal entity (dataAreaId) its rows belong to")
    specs = sorted(
        (DMF_ENTITIES[name] for name, rows in rows_by_entity.items() if rows),
        key=lambda s: (s.level, s.entity_set),
    )
    planned: list[tuple[DmfEntitySpec, list[str]]] = []
    packaged: list[PackagedEntity] = []
    files: list[tuple[str, bytes]] = []
    for spec in specs:
        rows = rows_by_entity[spec.entity_set]
        for index, row in enumerate(rows):
            company = row.get("dataAreaId")
            if company and str(company).casefold() != legal_entity.casefold():
                raise ValueError(
                    f"{spec.entity_set} row {index + 1} belongs to {company!r}, not to {legal_entity!r}: "
                    "build one package per legal entity"
                )
            missing = [k for k in spec.key_properties if row.get(k) in (None, "")]
            if missing:
                raise ValueError(
                    f"{spec.entity_set} row {index + 1} has no {missing}: DMF links and upserts rows by their key"
                )
        columns = _columns(spec, rows)
        planned.append((spec, columns))
        files.append((spec.file_name, data_file(columns, rows)))
        packaged.append(
            PackagedEntity(
                entity_set=spec.entity_set,
                label=spec.label,
                file_name=spec.file_name,
                columns=tuple(staging_field(c) for c in columns),
                keys=tuple(tuple(row[k] for k in spec.key_properties) for row in rows),
            )
        )
    if not planned:
        raise ValueError("nothing to package: every entity set has zero rows")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _write(archive, "Manifest.xml", manifest_xml(definition_group, description, planned).encode("utf-8"))
        _write(archive, "PackageHeader.xml", package_header_xml(description).encode("utf-8"))
        for name, data in files:
            _write(archive, name, data)
    return DmfPackage(
        legal_entity=legal_entity.lower(),
        definition_group=definition_group,
        content=buffer.getvalue(),
        entities=tuple(packaged),
    )
