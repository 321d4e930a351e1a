"""How the D365 sandbox reads a DMF package (its own reader: the sandbox shares no code with the connector).

Rules, as /work/shared/reference/d365-fo-api.md §7.1 reports F&O applying them:

- the ZIP must hold ``Manifest.xml``; each ``DataManagementPackageEntityData`` names its entity by the
  DMF **label** (:data:`DMF_LABELS`); an unknown label is refused at ``ImportFromPackage`` with 400
  "Entity <x> does not exist in the target environment" (pitfall 2);
- an entity whose ``EntityMapList`` is missing or empty imports **zero rows** and still "succeeds"
  (pitfall 1) unless the data project itself maps that entity (:class:`DataProject`);
- ``CSV-Unicode`` data must be UTF-16 LE with a BOM (pitfall 3) and end its lines with CRLF (pitfall 4:
  "the mapping is incorrect for entity <x> and field {GUID}"); a bare LF inside a quoted value is data;
- column headers are staging field names (upper-case property names, pitfall 5); a column that is not
  mapped, or mapped to a field the staging table does not have, fails the entity.

Sandbox choices where the reference is silent: the staging fields of an entity are its OData properties
in upper case except ``DATAAREAID`` (the company is ``legalEntityId``, §7.2); entities run in the order
(``ExecutionUnit``, ``LevelInExecutionUnit``, ``SequenceInLevel``).
"""

from __future__ import annotations

import csv
import io
import uuid
import zipfile
from dataclasses import dataclass, field
from xml.etree import ElementTree

from .odata import ODATA_EXCEPTION, ODataError
from .schema import EntitySchema

NS = "{http://schemas.microsoft.com/dynamics/2015/01/DataManagement}"
# DMF label -> OData entity set. Invoice labels: reference §7.1; PO and vendor labels: F&O's standard
# entity labels.
DMF_LABELS: dict[str, str] = {
    "Vendors V2": "VendorsV2",
    "Vendor invoice header": "VendorInvoiceHeaders",
    "Vendor invoice line": "VendorInvoiceLines",
    "Purchase order headers V2": "PurchaseOrderHeadersV2",
    "Purchase order lines V2": "PurchaseOrderLinesV2",
}


@dataclass(frozen=True)
class DataProject:
    """A data project (definition group) configured in the sandbox. ``mapped_entities``: labels whose
    mapping the project holds itself (source column = staging field), used when a package has none."""

    name: str
    mapped_entities: tuple[str, ...] = ()


class PackageError(Exception):
    """The package cannot run at all; ``entity`` names the entity at fault when there is one."""

    def __init__(self, message: str, entity: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.entity = entity


@dataclass
class PackageEntity:
    label: str
    entity_set: str
    file_name: str
    source_format: str
    order: tuple[int, int, int]
    mapping: dict[str, str]  # source column -> staging field; empty = no mapping
    data: bytes | None


@dataclass
class ParsedPackage:
    definition_group: str
    entities: list[PackageEntity] = field(default_factory=list)


def staging_fields(sch: EntitySchema) -> dict[str, str]:
    """Staging field -> OData property for an entity (every property but dataAreaId, upper-cased)."""
    return {p.upper(): p for p in sch.properties if p != "dataAreaId"}


def _text(node: ElementTree.Element, tag: str, default: str = "") -> str:
    child = node.find(NS + tag)
    return (child.text or "").strip() if child is not None and child.text else default


def read_package(blob: bytes, known_entity_sets: set[str]) -> ParsedPackage:
    """Parse the ZIP and its manifest; raises :class:`ODataError` 400 the way ImportFromPackage does."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
        names = set(archive.namelist())
        manifest = ElementTree.fromstring(archive.read("Manifest.xml"))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise ODataError(400, f"The package is not a valid data package: {exc}.", ODATA_EXCEPTION) from None
    parsed = ParsedPackage(definition_group=_text(manifest, "DefinitionGroupName"))
    entity_list = manifest.find(NS + "PackageEntityList")
    for node in [] if entity_list is None else entity_list.findall(NS + "DataManagementPackageEntityData"):
        label = _text(node, "EntityName")
        entity_set = DMF_LABELS.get(label)
        if entity_set is None or entity_set not in known_entity_sets:
            raise ODataError(400, f"Entity {label} does not exist in the target environment.", ODATA_EXCEPTION)
        if _text(node, "Disable").casefold() == "true":
            continue
        mapping: dict[str, str] = {}
        map_list = node.find(NS + "EntityMapList")
        for entity_map in [] if map_list is None else map_list.findall(NS + "EntityMap"):
            mapping[_text(entity_map, "XMLField")] = _text(entity_map, "EntityField")
        file_name = _text(node, "InputFilePath")

        def number(tag: str, node: ElementTree.Element = node) -> int:
            try:
                return int(_text(node, tag, "0"))
            except ValueError:
                return 0

        parsed.entities.append(
            PackageEntity(
                label=label,
                entity_set=entity_set,
                file_name=file_name,
                source_format=_text(node, "SourceFormat"),
                order=(number("ExecutionUnit"), number("LevelInExecutionUnit"), number("SequenceInLevel")),
                mapping=mapping,
                data=archive.read(file_name) if file_name in names else None,
            )
        )
    parsed.entities.sort(key=lambda e: e.order)
    return parsed


def _has_bare_lf(text: str) -> bool:
    """A line break that is not CRLF, outside quoted values."""
    quoted = False
    previous = ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif char == "\n" and not quoted and previous != "\r":
            return True
        previous = char
    return False


def read_rows(entity: PackageEntity, sch: EntitySchema) -> list[dict[str, str]]:
    """The data file's rows as ``staging field -> cell text`` (the mapping applied)."""
    if entity.data is None:
        raise PackageError(
            f"The file {entity.file_name} for entity {entity.label} is not in the package.", entity.label
        )
    if entity.source_format != "CSV-Unicode":
        raise PackageError(
            f"Source data format '{entity.source_format}' is not set up in this environment; use CSV-Unicode.",
            entity.label,
        )
    if not entity.data.startswith(b"\xff\xfe"):
        raise PackageError(
            f"The file {entity.file_name} is not in the format CSV-Unicode (UTF-16 LE with a byte order mark).",
            entity.label,
        )
    try:
        text = entity.data[2:].decode("utf-16-le")
    except UnicodeDecodeError:
        raise PackageError(f"The file {entity.file_name} is not valid UTF-16 LE text.", entity.label) from None
    if _has_bare_lf(text):
        raise PackageError(
            f"the mapping is incorrect for entity {entity.label} and field {{{uuid.uuid4()}}}", entity.label
        )
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return []
    header, body = records[0], records[1:]
    fields = staging_fields(sch)
    for column in header:
        target = entity.mapping.get(column)
        if target is None or target not in fields:
            raise PackageError(
                f"Field '{column}' of the source file is not mapped to a field of the staging table of "
                f"entity '{entity.label}'.",
                entity.label,
            )
    rows: list[dict[str, str]] = []
    for number, record in enumerate(body, start=2):
        if len(record) != len(header):
            raise PackageError(
                f"Line {number} of {entity.file_name} has {len(record)} values for {len(header)} columns.",
                entity.label,
            )
        rows.append({entity.mapping[c]: v for c, v in zip(header, record, strict=True)})
    return rows
