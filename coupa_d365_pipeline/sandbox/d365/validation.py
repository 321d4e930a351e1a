"""Business validation of the D365 sandbox (F&O's validateField/validateWrite), as Infolog warnings.

:class:`ValidatingStore` checks a record against the master data in the store: vendors, vendor groups,
terms of payment, currencies, released products, units, procurement categories, main accounts and financial
dimension values (``DimensionDisplayValue`` in the active dimension format, ``\\`` escaping the delimiter).

Invariants: validation never changes the store; it returns the Infolog lines (empty = valid) and the caller
turns them into one ``AxODataWriteException`` (HTTP 500). With ``fields`` given (a PATCH) only those fields
are checked; ``None`` (a create or PUT) checks all of them.
"""

from __future__ import annotations

from typing import Any

from .entities import FIELD_LABELS, PO_HEADER_SETS, PO_LINE_SETS, VENDOR_SETS
from .odata import _same, split_display_value
from .schema import EntitySchema
from .store import EntityStore


class ValidatingStore(EntityStore):
    """The entity store plus F&O's field and record validation."""

    def _fk(self, sch: EntitySchema, prop: str, value: Any, related: str) -> list[str]:
        aot, _ = self._aot(sch)
        return [
            f"Warning: The value '{value}' in field '{FIELD_LABELS.get(prop, prop)}' is not found in the related "
            f"table '{related}'.",
            f"Warning: validateField failed on field '{aot}.{prop}'.",
        ]

    def _must_fill(self, prop: str) -> str:
        return f"Warning: Field '{FIELD_LABELS.get(prop, prop)}' must be filled in."

    def _check_dimensions(self, sch: EntitySchema, prop: str, text: str, company: str, names: list[str]) -> list[str]:
        infolog: list[str] = []
        segments = split_display_value(text, self.dimension_delimiter)
        for name, seg in zip(names, segments, strict=False):  # extra segments are dropped, like F&O
            if seg == "":
                continue
            ok = any(
                _same(r.get("FinancialDimension"), name)
                and _same(r.get("DimensionValue"), seg)
                and (_same(r.get("LegalEntityId"), company) or r.get("LegalEntityId") in ("", None))
                for r in self._tables["FinancialDimensionValues"].values()
            )
            if not ok:
                aot, _ = self._aot(sch)
                infolog += [
                    f"Warning: The value '{seg}' in field '{name}' is not found in the related table "
                    f"'Financial dimension values'.",
                    f"Warning: validateField failed on field '{aot}.{prop}'.",
                ]
        return infolog

    def _check_main_account(self, sch: EntitySchema, prop: str, text: str, company: str) -> list[str]:
        segments = split_display_value(text, self.dimension_delimiter)
        account = segments[0]
        if account == "":
            return [self._must_fill(prop)]
        if self._tables["MainAccountLegalEntities"]:
            ok = self._exists(["MainAccountLegalEntities"], MainAccountId=account, LegalEntityId=company)
        else:
            ok = self._exists(["MainAccounts"], MainAccountId=account)
        infolog = [] if ok else self._fk(sch, prop, account, "Main accounts")
        if len(segments) > 1:  # ledger format: main account first, then the dimensions
            infolog += self._check_dimensions(
                sch,
                prop,
                self.dimension_delimiter.join(
                    s.replace(self.dimension_delimiter, "\\" + self.dimension_delimiter) for s in segments[1:]
                ),
                company,
                self.dimension_format,
            )
        return infolog

    def _validate(self, sch: EntitySchema, rec: dict[str, Any], fields: set[str] | None) -> list[str]:
        """Business validation (validateField/validateWrite); returns Infolog warnings."""
        name = sch.name
        company = str(rec.get("dataAreaId", ""))
        infolog: list[str] = []

        def check(prop: str) -> bool:
            return fields is None or prop in fields

        def vendor(prop: str, required: bool = False) -> None:
            if not check(prop):
                return
            value = rec.get(prop)
            if not value:
                if required:
                    infolog.append(self._must_fill(prop))
                return
            if not self._exists(VENDOR_SETS, dataAreaId=company, VendorAccountNumber=value):
                infolog.extend(self._fk(sch, prop, value, "Vendors"))

        def currency(prop: str) -> None:
            value = rec.get(prop)
            if check(prop) and value and not self._exists(["Currencies"], CurrencyCode=value):
                infolog.extend(self._fk(sch, prop, value, "Currency"))

        def item(prop: str) -> None:
            value = rec.get(prop)
            if check(prop) and value and not self._exists(["ReleasedProductsV2"], dataAreaId=company, ItemNumber=value):
                infolog.extend(self._fk(sch, prop, value, "Released products"))

        def dims(prop: str) -> None:
            value = rec.get(prop)
            if check(prop) and value:
                infolog.extend(self._check_dimensions(sch, prop, value, company, self.dimension_format))

        if name in VENDOR_SETS:
            if check("VendorGroupId"):
                group = rec.get("VendorGroupId")
                if not group:
                    infolog.append(self._must_fill("VendorGroupId"))
                elif not self._exists(["VendorGroups"], dataAreaId=company, VendorGroupId=group):
                    infolog.extend(self._fk(sch, "VendorGroupId", group, "Vendor groups"))
            terms = rec.get("DefaultPaymentTermsName")
            if (
                check("DefaultPaymentTermsName")
                and terms
                and not self._exists(["PaymentTerms"], dataAreaId=company, Name=terms)
            ):
                infolog.extend(self._fk(sch, "DefaultPaymentTermsName", terms, "Terms of payment"))
            currency("CurrencyCode")
        elif name == "VendorInvoiceHeaders":
            if check("InvoiceNumber") and not rec.get("InvoiceNumber"):
                infolog.append(self._must_fill("InvoiceNumber"))
            vendor("InvoiceAccount")
            vendor("VendorAccount")
            currency("Currency")
            dims("DimensionDisplayValue")
        elif name == "VendorInvoiceLines":
            if fields is None and not self._exists(
                ["VendorInvoiceHeaders"], dataAreaId=company, HeaderReference=rec.get("HeaderReference")
            ):
                infolog.extend(self._fk(sch, "HeaderReference", rec.get("HeaderReference"), "Pending vendor invoices"))
            item("ItemNumber")
            currency("Currency")
            if check("MainAccountDisplayValue") and rec.get("MainAccountDisplayValue"):
                infolog.extend(
                    self._check_main_account(sch, "MainAccountDisplayValue", rec["MainAccountDisplayValue"], company)
                )
            dims("DimensionDisplayValue")
            po, po_line = rec.get("PurchaseOrder"), rec.get("PurchLineNumber")
            if (check("PurchaseOrder") or check("PurchLineNumber")) and po:
                if po_line:
                    if not self._exists(PO_LINE_SETS, dataAreaId=company, PurchaseOrderNumber=po, LineNumber=po_line):
                        infolog.extend(self._fk(sch, "PurchLineNumber", po_line, "Purchase order lines"))
                elif not self._exists(PO_HEADER_SETS, dataAreaId=company, PurchaseOrderNumber=po):
                    infolog.extend(self._fk(sch, "PurchaseOrder", po, "Purchase orders"))
        elif name in PO_HEADER_SETS:
            vendor("OrderVendorAccountNumber", required=True)
            vendor("InvoiceVendorAccountNumber")
            currency("CurrencyCode")
        elif name in PO_LINE_SETS:
            if fields is None and not self._exists(
                PO_HEADER_SETS, dataAreaId=company, PurchaseOrderNumber=rec.get("PurchaseOrderNumber")
            ):
                infolog.extend(self._fk(sch, "PurchaseOrderNumber", rec.get("PurchaseOrderNumber"), "Purchase orders"))
            item("ItemNumber")
            unit = rec.get("PurchaseUnitSymbol")
            if (
                check("PurchaseUnitSymbol")
                and unit
                and self._tables["UnitsOfMeasure"]
                and not self._exists(["UnitsOfMeasure"], UnitSymbol=unit)
            ):
                infolog.extend(self._fk(sch, "PurchaseUnitSymbol", unit, "Units"))
            category = rec.get("ProcurementProductCategoryName")
            if (
                check("ProcurementProductCategoryName")
                and category
                and not self._exists(["ProcurementProductCategories"], CategoryName=category)
            ):
                infolog.extend(self._fk(sch, "ProcurementProductCategoryName", category, "Category"))
        return infolog
