"""The DMF package builder: ZIP layout, manifest, CSV-Unicode data files, determinism (no network)."""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal
from xml.etree import ElementTree

import pytest

from coupa_d365_pipeline.d365.dmf_package import DMF_NAMESPACE, build_package

NS = "{" + DMF_NAMESPACE + "}"


def invoice_rows() -> dict[str, list[dict]]:
    header = {
        "dataAreaId": "usmf",
        "HeaderReference": "COUPA-1",
        "InvoiceNumber": "INV-1",
        "InvoiceAccount": "US-101",
        "InvoiceDate": "2026-01-15T12:00:00Z",
        "Currency": "USD",
        "ImportedAmount": Decimal("150.50"),
        "InvoiceDescription": 'Coupa invoice 1, "rush"\nsecond line',
    }
    line = {
        "dataAreaId": "usmf",
        "HeaderReference": "COUPA-1",
        "InvoiceLineNumber": 1,
        "LineDescription": "Paper, A4",
        "ReceiveNow": Decimal("2"),
        "UnitPrice": Decimal("75.25"),
        "Amount": Decimal("150.50"),
        "Currency": "USD",
        "MainAccountDisplayValue": "600150",
        "DimensionDisplayValue": "001-CC\\-10-022",
    }
    return {"VendorInvoiceLines": [line], "VendorInvoiceHeaders": [header]}


def build(rows=None, **kwargs):
    return build_package(
        rows or invoice_rows(), legal_entity="USMF", definition_group="Coupa documents", description="run 1", **kwargs
    )


def test_zip_holds_manifest_header_and_one_csv_per_entity_in_header_then_line_order():
    package = build()
    archive = zipfile.ZipFile(io.BytesIO(package.content))
    assert archive.namelist() == [
        "Manifest.xml",
        "PackageHeader.xml",
        "Vendor invoice header.csv",
        "Vendor invoice line.csv",
    ]
    manifest = ElementTree.fromstring(archive.read("Manifest.xml"))
    assert manifest.findtext(NS + "DefinitionGroupName") == "Coupa documents"
    entities = manifest.findall(f"{NS}PackageEntityList/{NS}DataManagementPackageEntityData")
    assert [e.findtext(NS + "EntityName") for e in entities] == ["Vendor invoice header", "Vendor invoice line"]
    assert [e.findtext(NS + "LevelInExecutionUnit") for e in entities] == ["10", "20"]
    assert {e.findtext(NS + "SourceFormat") for e in entities} == {"CSV-Unicode"}
    header_maps = entities[0].findall(f"{NS}EntityMapList/{NS}EntityMap")
    assert [m.findtext(NS + "XMLField") for m in header_maps] == [m.findtext(NS + "EntityField") for m in header_maps]
    assert [m.findtext(NS + "EntityField") for m in header_maps][:3] == [
        "HEADERREFERENCE",
        "INVOICENUMBER",
        "INVOICEACCOUNT",
    ]
    assert "DATAAREAID" not in [m.findtext(NS + "EntityField") for m in header_maps]
    header = ElementTree.fromstring(archive.read("PackageHeader.xml"))
    assert header.findtext(NS + "PackageType") == "DefinitionGroup"
    assert header.findtext(NS + "PackageVersion") == "2"
    assert package.legal_entity == "usmf"
    assert [(e.entity_set, e.keys) for e in package.entities] == [
        ("VendorInvoiceHeaders", (("COUPA-1",),)),
        ("VendorInvoiceLines", (("COUPA-1", 1),)),
    ]


def test_data_files_are_utf16le_with_bom_crlf_and_staging_headers_with_exact_values():
    archive = zipfile.ZipFile(io.BytesIO(build().content))
    raw = archive.read("Vendor invoice header.csv")
    assert raw[:2] == b"\xff\xfe"
    text = raw[2:].decode("utf-16-le")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == [
        "HEADERREFERENCE",
        "INVOICENUMBER",
        "INVOICEACCOUNT",
        "INVOICEDATE",
        "CURRENCY",
        "IMPORTEDAMOUNT",
        "INVOICEDESCRIPTION",
    ]
    assert rows[1] == [
        "COUPA-1",
        "INV-1",
        "US-101",
        "2026-01-15T12:00:00Z",
        "USD",
        "150.50",
        'Coupa invoice 1, "rush"\nsecond line',
    ]
    # every record ends with CRLF; the only bare LF is the one inside the quoted description
    assert text.endswith("\r\n")
    assert text.replace("\r\n", "").count("\n") == 1
    line = list(csv.reader(io.StringIO(archive.read("Vendor invoice line.csv")[2:].decode("utf-16-le"), newline="")))
    assert dict(zip(line[0], line[1], strict=True))["DIMENSIONDISPLAYVALUE"] == "001-CC\\-10-022"
    assert dict(zip(line[0], line[1], strict=True))["INVOICELINENUMBER"] == "1"


def test_same_input_gives_identical_bytes():
    assert build().content == build().content
    assert build().sha256 == build().sha256
    other = invoice_rows()
    other["VendorInvoiceHeaders"][0]["ImportedAmount"] = Decimal("150.51")
    assert build(other).sha256 != build().sha256


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["VendorInvoiceHeaders"][0].update(dataAreaId="demf"), "one package per legal entity"),
        (lambda r: r["VendorInvoiceHeaders"][0].update(ImportedAmount=150.5), "use Decimal"),
        (lambda r: r["VendorInvoiceHeaders"][0].update(InvoiceAmount=Decimal(1)), "no properties ['InvoiceAmount']"),
        (lambda r: r["VendorInvoiceLines"][0].pop("HeaderReference"), "has no ['HeaderReference']"),
        (lambda r: r.update(CustomersV3=[{"CustomerAccount": "X"}]), "no DMF entity is configured"),
    ],
)
def test_rows_dmf_cannot_import_as_meant_are_refused_before_anything_is_sent(change, message):
    rows = invoice_rows()
    change(rows)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(rows)
