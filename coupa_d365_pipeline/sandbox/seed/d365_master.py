"""D365 master data matching the Coupa seed: legal entities, currencies, vendors, accounts, dimensions, items.

Invariant: derived only from the catalogue and the suppliers the generator marked as existing vendors (no
randomness of its own), with the exact property names of ``d365/entities.json``.
"""

from __future__ import annotations

from .catalogue import (
    BUSINESS_UNITS,
    COMMODITIES,
    COST_CENTERS,
    CURRENCIES,
    DEPARTMENTS,
    MAIN_ACCOUNTS,
    MAPPED,
    PAYMENT_TERMS,
    RELEASED_ITEMS,
    UOMS,
    USMF_ONLY_MAIN_ACCOUNT,
)


def _d365_master_data(existing: list[dict], sup_le: dict[int, tuple]) -> dict[str, list[dict]]:
    les = [le[2] for le in MAPPED]
    d: dict[str, list[dict]] = {}
    d["LegalEntities"] = [
        {
            "LegalEntityId": le[2],
            "Name": f"Contoso {le[1]}",
            "AddressCountryRegionId": {"US": "USA", "DE": "DEU", "GB": "GBR"}[le[4]],
        }
        for le in MAPPED
    ]
    d["Currencies"] = [{"CurrencyCode": c, "Name": v[1], "Symbol": v[2]} for c, v in CURRENCIES.items()]
    d["ChartOfAccounts"] = [{"ChartOfAccounts": "Shared", "Description": "Contoso shared chart of accounts"}]
    d["MainAccounts"] = [
        {"ChartOfAccounts": "Shared", "MainAccountId": mid, "Name": name, "MainAccountType": typ}
        for mid, (name, typ) in MAIN_ACCOUNTS.items()
    ]
    d["MainAccountLegalEntities"] = [
        {"MainAccountId": mid, "ChartOfAccounts": "Shared", "LegalEntityId": le, "IsSuspended": "No"}
        for mid in MAIN_ACCOUNTS
        for le in les
        if mid != USMF_ONLY_MAIN_ACCOUNT or le == "usmf"
    ]
    d["DimensionAttributes"] = [
        {"DimensionName": n, "ReportColumnName": n} for n in ("BusinessUnit", "CostCenter", "Department")
    ]
    fdv = []
    for dim, values in (
        ("BusinessUnit", BUSINESS_UNITS),
        ("CostCenter", COST_CENTERS),
        ("Department", [v for v in DEPARTMENTS if v]),
    ):
        for v in values:
            fdv.append(
                {
                    "FinancialDimension": dim,
                    "LegalEntityId": "",
                    "DimensionValue": v,
                    "Description": f"{dim} {v}",
                    "IsSuspended": "No",
                }
            )
    d["FinancialDimensionValues"] = fdv
    d["DimensionIntegrationFormats"] = [
        {
            "DimensionFormatName": "BusinessUnit-CostCenter-Department",
            "DimensionFormatType": "DefaultAccount",
            "FinancialDimensionFormat": "BusinessUnit-CostCenter-Department",
            "IsActive": "Yes",
        },
        {
            "DimensionFormatName": "MainAccount-BusinessUnit-CostCenter-Department",
            "DimensionFormatType": "AccountStructure",
            "FinancialDimensionFormat": "MainAccount-BusinessUnit-CostCenter-Department",
            "IsActive": "Yes",
        },
    ]
    d["ReleasedProductsV2"] = [
        {
            "dataAreaId": le,
            "ItemNumber": it[1],
            "ProductNumber": it[1],
            "SearchName": it[2][:20],
            "ProductType": it[4],
            "ProductSubType": "Product",
            "PurchaseUnitSymbol": it[3],
            "InventoryUnitSymbol": it[3],
        }
        for le in les
        for it in RELEASED_ITEMS
    ]
    d["UnitsOfMeasure"] = [
        {"UnitSymbol": u, "UnitDescription": v[0], "UnitClass": v[1], "DecimalPrecision": v[2]} for u, v in UOMS.items()
    ]
    d["ProcurementProductCategories"] = [
        {"CategoryName": c, "CategoryHierarchyName": "Procurement", "CategoryCode": c.upper().replace(" ", "_")}
        for c in COMMODITIES
    ]
    d["VendorGroups"] = [
        {"dataAreaId": le, "VendorGroupId": g, "Description": desc}
        for le in les
        for g, desc in (("10", "Domestic vendors"), ("20", "Foreign vendors"), ("30", "Intercompany / other"))
    ]
    d["PaymentTerms"] = [
        {
            "dataAreaId": le,
            "Name": code,
            "Description": f"Net {days} days",
            "NumberOfDays": days,
            "PaymentMethodType": "Net",
        }
        for le in les
        for _, code, days in PAYMENT_TERMS
    ]
    d["VendorPaymentMethods"] = [
        {"dataAreaId": le, "Name": name, "Description": desc, "PaymentType": ptype, "AccountType": "Bank"}
        for le in les
        for name, desc, ptype in (
            ("CHECK", "Check", "Check"),
            ("ELECTRONIC", "Electronic payment", "ElectronicPayment"),
        )
    ]
    d["VendorsV2"] = [
        {
            "dataAreaId": sup_le[s["id"]][2],
            "VendorAccountNumber": s["number"],
            "VendorOrganizationName": s["name"],
            "VendorGroupId": "10",
            "CurrencyCode": sup_le[s["id"]][3],
            "DefaultPaymentTermsName": s["payment-term"]["code"],
            "OnHoldStatus": "No",
        }
        for s in existing
    ]
    return d
