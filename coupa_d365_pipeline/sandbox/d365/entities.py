"""Names of the F&O entity sets the D365 sandbox gives behaviour to, and how they relate.

Invariants: every entity set named here exists in ``d365/entities.json``; each PO line set pairs with
exactly one header set of the same version (``PO_LINE_TO_HEADER``); record ids start at ``FIRST_RECID``
(F&O's first RecId).
"""

from __future__ import annotations

# AOT entity name and "<Table label> (<TABLE>)" for the sets the project writes.
ENTITY_INFO: dict[str, tuple[str, str]] = {
    "VendorsV2": ("VendVendorV2Entity", "Vendors (VendTable)"),
    "VendorsV3": ("VendVendorV3Entity", "Vendors (VendTable)"),
    "Vendors": ("VendVendorEntity", "Vendors (VendTable)"),
    "VendorInvoiceHeaders": ("VendorInvoiceHeaderEntity", "Pending vendor invoices (VendInvoiceInfoTable)"),
    "VendorInvoiceLines": ("VendorInvoiceLineEntity", "Pending vendor invoice lines (VendInvoiceInfoLine)"),
    "PurchaseOrderHeadersV2": ("PurchPurchaseOrderHeaderV2Entity", "Purchase orders (PurchTable)"),
    "PurchaseOrderHeaders": ("PurchPurchaseOrderHeaderEntity", "Purchase orders (PurchTable)"),
    "PurchaseOrderLinesV2": ("PurchPurchaseOrderLineV2Entity", "Purchase order lines (PurchLine)"),
    "PurchaseOrderLines": ("PurchPurchaseOrderLineEntity", "Purchase order lines (PurchLine)"),
}
FIELD_LABELS: dict[str, str] = {
    "HeaderReference": "Header reference",
    "VendorAccountNumber": "Vendor account",
    "PurchaseOrderNumber": "Purchase order",
    "InvoiceLineNumber": "Line number",
    "LineNumber": "Line number",
    "VendorGroupId": "Group",
    "DefaultPaymentTermsName": "Terms of payment",
    "CurrencyCode": "Currency",
    "Currency": "Currency",
    "InvoiceAccount": "Invoice account",
    "VendorAccount": "Vendor account",
    "InvoiceNumber": "Invoice",
    "ItemNumber": "Item number",
    "MainAccountDisplayValue": "Main account",
    "PurchaseOrder": "Purchase order",
    "PurchLineNumber": "Line number",
    "OrderVendorAccountNumber": "Vendor account",
    "InvoiceVendorAccountNumber": "Invoice account",
    "PurchaseUnitSymbol": "Unit",
    "ProcurementProductCategoryName": "Procurement category",
    "dataAreaId": "Company",
}
DEFAULT_NUMBER_SEQUENCES: dict[str, tuple[str, str]] = {
    "VendorInvoiceHeaders": ("HeaderReference", "APINV-{n:06d}"),
    "PurchaseOrderHeadersV2": ("PurchaseOrderNumber", "PO-{n:06d}"),
    "PurchaseOrderHeaders": ("PurchaseOrderNumber", "PO-{n:06d}"),
    "VendorsV2": ("VendorAccountNumber", "V-{n:06d}"),
    "VendorsV3": ("VendorAccountNumber", "V-{n:06d}"),
    "Vendors": ("VendorAccountNumber", "V-{n:06d}"),
}
# header set -> (line set, columns linking line to header)
CASCADES: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {
    "VendorInvoiceHeaders": [
        ("VendorInvoiceLines", [("dataAreaId", "dataAreaId"), ("HeaderReference", "HeaderReference")])
    ],
    "PurchaseOrderHeadersV2": [
        ("PurchaseOrderLinesV2", [("dataAreaId", "dataAreaId"), ("PurchaseOrderNumber", "PurchaseOrderNumber")])
    ],
    "PurchaseOrderHeaders": [
        ("PurchaseOrderLines", [("dataAreaId", "dataAreaId"), ("PurchaseOrderNumber", "PurchaseOrderNumber")])
    ],
}
VENDOR_SETS = ("VendorsV2", "VendorsV3", "Vendors")
PO_HEADER_SETS = ("PurchaseOrderHeadersV2", "PurchaseOrderHeaders")
PO_LINE_SETS = ("PurchaseOrderLinesV2", "PurchaseOrderLines")
FIRST_RECID = 5637144576
# PO line set -> its header set (each version pairs with its own headers)
PO_LINE_TO_HEADER = {"PurchaseOrderLinesV2": "PurchaseOrderHeadersV2", "PurchaseOrderLines": "PurchaseOrderHeaders"}
PO_HEADER_TO_LINE = {v: k for k, v in PO_LINE_TO_HEADER.items()}
