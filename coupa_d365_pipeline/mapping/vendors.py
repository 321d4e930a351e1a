"""Pure functions mapping a Coupa supplier (raw JSON dict) to a D365 ``VendorsV2`` body per legal
entity, and the change detection between that body and the vendor D365 holds.

A supplier that cannot be booked becomes a :class:`~.fields.Quarantine` listing *every* problem,
each phrased as what to fix and where.

Choices documented here:

* ``AddressCountryRegionId`` gets the Coupa country code (ISO 3166 alpha-2) translated through the
  mapping's ``country_regions`` (standard D365 data uses alpha-3 ids: ``US`` -> ``USA``); unmapped
  codes are sent as is.
* Only :data:`VENDOR_SYNC_FIELDS` are kept in step after creation; they compare folded (case and
  whitespace runs ignored, see :func:`~.fields.same_value`).
"""

from __future__ import annotations

from typing import Any

from .config import MappingConfig
from .fields import Problems, Quarantine, changed_fields, name_of, text_of
from .limits import check_body
from .master import D365MasterData

__all__ = [
    "Quarantine",  # re-exported from .fields
    "VENDOR_SYNC_FIELDS",
    "vendor_account_for",
    "map_vendor",
    "vendor_changes",
]

VENDOR_SOURCES = {
    "VendorAccountNumber": "the supplier number",
    "VendorOrganizationName": "the supplier name",
    "VendorSearchName": "the supplier name",
    "AddressStreet": "the supplier's street",
    "AddressCity": "the supplier's city",
    "AddressZipCode": "the supplier's postal code",
    "AddressCountryRegionId": "the supplier's country",
}
NAME_MAX = 100
SEARCH_NAME_MAX = 20

VENDOR_SYNC_FIELDS: tuple[str, ...] = (
    "VendorOrganizationName",
    "AddressStreet",
    "AddressCity",
    "AddressZipCode",
    "AddressCountryRegionId",
    "DefaultPaymentTermsName",
    "CurrencyCode",
    "OnHoldStatus",
)


def vendor_account_for(supplier: dict, mapping: MappingConfig) -> str | None:
    """D365 VendorAccountNumber for a Coupa supplier (or supplier reference), or None."""
    va = mapping.vendor_account
    if va.source == "prefix_id":
        sid = text_of(supplier.get("id"))
        return f"{va.prefix}{sid}" if sid else None
    return text_of(supplier.get("number")) or None


def map_vendor(supplier: dict, legal_entity: str, mapping: MappingConfig, master: D365MasterData) -> dict | Quarantine:
    """VendorsV2 body for a Coupa supplier in one legal entity, or a Quarantine."""
    le = text_of(legal_entity).lower()
    p = Problems()
    sid = supplier.get("id")
    who = f"supplier {sid}" + (f" ({text_of(supplier.get('name'))})" if text_of(supplier.get("name")) else "")
    account = vendor_account_for(supplier, mapping)
    if not account:
        if mapping.vendor_account.source == "supplier_number":
            p.add(
                "no_vendor_account",
                f"{who} has no supplier number, so it has no D365 vendor account; "
                "enter the supplier number in Coupa or use vendor_account: {source: prefix_id, prefix: …}",
            )
        else:
            p.add("no_vendor_account", f"{who} has no id; cannot derive a vendor account")
    if not master.has_legal_entity(le):
        p.add(
            "legal_entity_not_in_d365",
            f"legal entity {le!r} does not exist in D365 (LegalEntities); fix legal_entities in the mapping",
        )
    defaults = dict(mapping.vendor_defaults.get(le, {}))
    group = text_of(defaults.get("VendorGroupId"))
    if not group:
        p.add(
            "vendor_group_missing",
            f"no VendorGroupId for legal entity {le!r}; add vendor_defaults.{le}.VendorGroupId to the mapping",
        )
    elif master.has_legal_entity(le) and not master.has_vendor_group(le, group):
        p.add(
            "vendor_group_missing",
            f"vendor group {group!r} does not exist in legal entity {le} "
            "(D365 VendorGroups); create it in D365 or fix vendor_defaults."
            f"{le}.VendorGroupId in the mapping",
        )
    name = text_of(supplier.get("name")) or text_of(supplier.get("display-name"))
    if not name:
        p.add("supplier_name_missing", f"{who} has no name; enter it in Coupa")
    if p:
        return p.quarantine()

    body: dict[str, Any] = {"dataAreaId": le, "VendorAccountNumber": account}
    body.update(defaults)
    body["VendorOrganizationName"] = name[:NAME_MAX]
    body["VendorSearchName"] = name[:SEARCH_NAME_MAX]
    addr = supplier.get("primary-address") or {}
    if isinstance(addr, dict) and addr:
        street = "\n".join(s for s in (text_of(addr.get(f"street{i}")) for i in range(1, 5)) if s)
        if street:
            body["AddressStreet"] = street
        if text_of(addr.get("city")):
            body["AddressCity"] = text_of(addr.get("city"))
        if text_of(addr.get("postal-code")):
            body["AddressZipCode"] = text_of(addr.get("postal-code"))
        country = name_of(addr.get("country"), "code")
        if country:
            body["AddressCountryRegionId"] = mapping.country_region(country)
    pt_code = name_of(supplier.get("payment-term"), "code")
    if pt_code:
        pt = mapping.payment_terms_name(pt_code)
        if master.has_payment_terms(le, pt):
            body["DefaultPaymentTermsName"] = pt
    on_hold = text_of(supplier.get("status")).lower() == "inactive" or supplier.get("on-hold") is True
    body["OnHoldStatus"] = "All" if on_hold else "No"
    check_body(p, "VendorsV2", body, VENDOR_SOURCES, tag=who)
    if p:
        return p.quarantine()
    return body


def vendor_changes(current: dict, desired: dict) -> dict:
    """The VENDOR_SYNC_FIELDS of ``desired`` that differ from ``current`` (case/whitespace-insensitive)."""
    return changed_fields(current, desired, VENDOR_SYNC_FIELDS, fold=True)
