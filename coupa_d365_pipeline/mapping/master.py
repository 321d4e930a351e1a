"""D365 F&O master data the mapping validates against (read once per run).

Built from rows exactly as D365 (or the sandbox) returns them for the entity sets in
:data:`ENTITY_SETS_AND_SELECT`. D365 compares identifiers case-insensitively (SQL collation), so
every lookup here is case-insensitive; legal entities are stored lower-case. Rows marked
``IsSuspended: "Yes"`` (main accounts, dimension values) count as unusable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["D365MasterData", "ENTITY_SETS_AND_SELECT"]

# entity set -> properties to $select (all exist in d365/entities.json; tested)
ENTITY_SETS_AND_SELECT: dict[str, list[str]] = {
    "LegalEntities": ["LegalEntityId", "Name"],
    "Currencies": ["CurrencyCode"],
    "MainAccounts": ["ChartOfAccounts", "MainAccountId", "IsSuspended"],
    "MainAccountLegalEntities": ["ChartOfAccounts", "MainAccountId", "LegalEntityId", "IsSuspended"],
    "FinancialDimensionValues": ["FinancialDimension", "LegalEntityId", "DimensionValue", "IsSuspended"],
    "ReleasedProductsV2": ["dataAreaId", "ItemNumber"],
    "VendorGroups": ["dataAreaId", "VendorGroupId"],
    "PaymentTerms": ["dataAreaId", "Name"],
    "ProcurementProductCategories": ["CategoryName", "CategoryHierarchyName"],
    "UnitsOfMeasure": ["UnitSymbol"],
}


def _k(value: Any) -> str:
    return str(value or "").strip().casefold()


def _le(value: Any) -> str:
    return str(value or "").strip().lower()


def _suspended(row: dict) -> bool:
    return str(row.get("IsSuspended") or "No") == "Yes"


@dataclass
class D365MasterData:
    legal_entities: set[str] = field(default_factory=set)
    currencies: set[str] = field(default_factory=set)
    main_accounts: set[str] = field(default_factory=set)  # casefolded ids, any chart
    main_accounts_by_le: dict[str, set[str]] = field(default_factory=dict)  # le -> casefolded ids (active)
    main_account_le_rows: dict[str, set[str]] = field(default_factory=dict)  # le -> ids incl. suspended
    released_items: dict[str, set[str]] = field(default_factory=dict)  # le -> casefolded item numbers
    dimension_values: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (dim, le|"") -> values
    payment_terms: dict[str, set[str]] = field(default_factory=dict)
    vendor_groups: dict[str, set[str]] = field(default_factory=dict)
    procurement_categories: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (name, hierarchy)
    units: dict[str, str] = field(default_factory=dict)  # casefolded symbol -> as in D365

    @classmethod
    def from_rows(cls, rows_by_entity_set: dict[str, Iterable[dict]]) -> D365MasterData:
        def rows(name: str) -> Iterable[dict]:
            return rows_by_entity_set.get(name) or ()

        m = cls()
        m.legal_entities = {_le(r.get("LegalEntityId") or r.get("dataAreaId")) for r in rows("LegalEntities")} - {""}
        m.currencies = {str(r["CurrencyCode"]).strip().upper() for r in rows("Currencies") if r.get("CurrencyCode")}
        m.main_accounts = {
            _k(r["MainAccountId"]) for r in rows("MainAccounts") if r.get("MainAccountId") and not _suspended(r)
        }
        for r in rows("MainAccountLegalEntities"):
            le, acct = _le(r.get("LegalEntityId")), _k(r.get("MainAccountId"))
            if not le or not acct:
                continue
            m.main_account_le_rows.setdefault(le, set()).add(acct)
            if not _suspended(r):
                m.main_accounts_by_le.setdefault(le, set()).add(acct)
        for r in rows("ReleasedProductsV2"):
            if r.get("ItemNumber"):
                m.released_items.setdefault(_le(r.get("dataAreaId")), set()).add(_k(r["ItemNumber"]))
        for r in rows("FinancialDimensionValues"):
            if r.get("FinancialDimension") and r.get("DimensionValue") and not _suspended(r):
                key = (_k(r["FinancialDimension"]), _le(r.get("LegalEntityId")))
                m.dimension_values.setdefault(key, set()).add(_k(r["DimensionValue"]))
        for r in rows("PaymentTerms"):
            if r.get("Name"):
                m.payment_terms.setdefault(_le(r.get("dataAreaId")), set()).add(_k(r["Name"]))
        for r in rows("VendorGroups"):
            if r.get("VendorGroupId"):
                m.vendor_groups.setdefault(_le(r.get("dataAreaId")), set()).add(_k(r["VendorGroupId"]))
        for r in rows("ProcurementProductCategories"):
            if r.get("CategoryName"):
                m.procurement_categories.setdefault(
                    _k(r["CategoryName"]), (str(r["CategoryName"]), str(r.get("CategoryHierarchyName") or ""))
                )
        for r in rows("UnitsOfMeasure"):
            if r.get("UnitSymbol"):
                m.units.setdefault(_k(r["UnitSymbol"]), str(r["UnitSymbol"]).strip())
        return m

    # ------------------------------------------------------------------ queries
    def has_legal_entity(self, le: str) -> bool:
        return _le(le) in self.legal_entities

    def has_currency(self, code: str) -> bool:
        return str(code or "").strip().upper() in self.currencies

    def main_account_exists(self, account_id: str) -> bool:
        """In any chart of accounts (MainAccounts), or active in any legal entity."""
        a = _k(account_id)
        return a in self.main_accounts or any(a in s for s in self.main_account_le_rows.values())

    def main_account_in(self, le: str, account_id: str) -> bool:
        """Active in that legal entity: MainAccountLegalEntities when it has rows for the LE, else MainAccounts."""
        le_l = _le(le)
        if le_l in self.main_account_le_rows:
            return _k(account_id) in self.main_accounts_by_le.get(le_l, set())
        return _k(account_id) in self.main_accounts

    def item_released(self, le: str, item_number: str) -> bool:
        return _k(item_number) in self.released_items.get(_le(le), set())

    def dimension_value_exists(self, dimension: str, value: str, le: str) -> bool:
        """Shared (LegalEntityId "") or specific to ``le``; suspended values do not count."""
        d, v = _k(dimension), _k(value)
        return v in self.dimension_values.get((d, ""), set()) or v in self.dimension_values.get((d, _le(le)), set())

    def has_payment_terms(self, le: str, name: str) -> bool:
        return _k(name) in self.payment_terms.get(_le(le), set())

    def has_vendor_group(self, le: str, group: str) -> bool:
        return _k(group) in self.vendor_groups.get(_le(le), set())

    def has_procurement_category(self, name: str) -> bool:
        return _k(name) in self.procurement_categories

    def procurement_category(self, name: str) -> tuple[str, str] | None:
        """(CategoryName as spelled in D365, CategoryHierarchyName) or None."""
        return self.procurement_categories.get(_k(name))

    def has_unit(self, symbol: str) -> bool:
        """The unit of measure exists in D365 (UnitsOfMeasure, shared across legal entities)."""
        return _k(symbol) in self.units

    def unit_symbol(self, symbol: str) -> str | None:
        """UnitSymbol as spelled in D365, or None."""
        return self.units.get(_k(symbol))
