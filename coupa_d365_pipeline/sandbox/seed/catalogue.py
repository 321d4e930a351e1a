"""The fixed catalogue the seed draws from: Contoso's legal entities, currencies, accounts, items, names.

Invariants: constants only (plus two integer-cents helpers), no randomness and no clock; every D365 code
here (legal entity, main account, dimension value, item, unit) is what the D365 master data of
:mod:`.d365_master` contains, except the deliberately unmappable ones (``INVALID_MAIN_ACCOUNT``,
``UNRELEASED_ITEM``, the "CA Plant" chart with no legal entity, ``USMF_ONLY_MAIN_ACCOUNT`` outside usmf).
"""

from __future__ import annotations

# (Coupa account-type id, Coupa account-type name, D365 dataAreaId or None, currency, country, tax rate %)
LEGAL_ENTITIES: list[tuple[int, str, str | None, str, str, int]] = [
    (1, "US Manufacturing", "usmf", "USD", "US", 0),
    (2, "DE Manufacturing", "demf", "EUR", "DE", 19),
    (3, "UK Manufacturing", "gbsi", "GBP", "GB", 20),
    (4, "CA Plant", None, "CAD", "CA", 5),
]
MAPPED = [le for le in LEGAL_ENTITIES if le[2]]
CA_PLANT = LEGAL_ENTITIES[3]

CURRENCIES = {  # code -> (coupa id, name, symbol)
    "USD": (1, "US Dollar", "$"),
    "EUR": (2, "Euro", "€"),
    "GBP": (3, "Pound Sterling", "£"),
    "CAD": (4, "Canadian Dollar", "$"),
    "MXN": (5, "Mexican Peso", "$"),
}
COUNTRY_NAMES = {"US": "United States", "DE": "Germany", "GB": "United Kingdom", "CA": "Canada"}

PAYMENT_TERMS = [(1, "Net30", 30), (2, "Net45", 45), (3, "Net60", 60)]

# main account id -> (name, D365 MainAccountType)
MAIN_ACCOUNTS = {
    "600150": ("Office supplies", "Expense"),
    "601200": ("Raw materials", "Expense"),
    "605140": ("Repairs and maintenance", "Expense"),
    "618900": ("Freight and transport", "Expense"),
    "140200": ("Inventory received not invoiced", "BalanceSheet"),
    "602300": ("Tooling (US only)", "Expense"),
}
USMF_ONLY_MAIN_ACCOUNT = "602300"
INVALID_MAIN_ACCOUNT = "699999"
COMMON_MAIN_ACCOUNTS = ["600150", "601200", "605140", "618900", "140200"]
BUSINESS_UNITS = ["001", "002", "003", "004"]
COST_CENTERS = ["007", "011", "022", "CC-10"]
DEPARTMENTS = ["022", "023", "024", ""]

UOMS = {  # code -> (description, D365 UnitClass, decimals)
    "ea": ("Each", "Quantity", 0),
    "pcs": ("Pieces", "Quantity", 0),
    "kg": ("Kilogram", "Mass", 2),
    "h": ("Hour", "Time", 2),
    "m": ("Meter", "Length", 2),
}
COMMODITIES = ["Office Supplies", "MRO", "Freight", "Raw Materials", "IT Services", "Professional Services"]

# catalogue items: (coupa id, item-number, name, uom, D365 ProductType, commodity)
ITEMS = [
    (101, "M-1000", "Hex bolt M8x40", "pcs", "Item", "MRO"),
    (102, "M-1001", "Hex nut M8", "pcs", "Item", "MRO"),
    (103, "M-1002", "Steel sheet 2mm", "kg", "Item", "Raw Materials"),
    (104, "M-1003", "Aluminium bar 20mm", "m", "Item", "Raw Materials"),
    (105, "M-1004", "Hydraulic oil HLP46", "kg", "Item", "MRO"),
    (106, "M-1005", "Safety gloves", "ea", "Item", "MRO"),
    (107, "M-1006", "Copy paper A4", "ea", "Item", "Office Supplies"),
    (108, "M-1007", "Toner cartridge", "ea", "Item", "Office Supplies"),
    (109, "M-1008", "Bearing 6204", "pcs", "Item", "MRO"),
    (110, "M-1009", "Copper wire 1.5mm", "m", "Item", "Raw Materials"),
    (111, "S-2000", "Machine maintenance", "h", "Service", "Professional Services"),
    (112, "S-2001", "Calibration service", "h", "Service", "Professional Services"),
    (113, "S-2002", "Pallet freight", "ea", "Service", "Freight"),
    (114, "M-9999", "Prototype fixture (not released)", "ea", "Item", "MRO"),
]
UNRELEASED_ITEM = "M-9999"
RELEASED_ITEMS = [it for it in ITEMS if it[1] != UNRELEASED_ITEM]

FREE_TEXT = [
    ("Consulting services", "Professional Services", "h"),
    ("Inbound freight", "Freight", "ea"),
    ("Cleaning supplies", "Office Supplies", "ea"),
    ("Software subscription", "IT Services", "ea"),
    ("Scrap metal removal", "MRO", "ea"),
    ("Welding gas refill", "MRO", "kg"),
    ("Cable trays", "Raw Materials", "m"),
]

_NAME_A = [
    "Acme",
    "Northwind",
    "Fabrikam",
    "Litware",
    "Adatum",
    "Tailspin",
    "Proseware",
    "Wingtip",
    "Lamna",
    "Alpine",
    "Bluebird",
    "Coho",
    "Contour",
    "Fourth Coffee",
    "Humongous",
    "Lucerne",
    "Margie",
    "Nod",
    "Relecloud",
    "Southridge",
    "Trey",
    "VanArsdel",
    "Woodgrove",
    "Wide World",
]
_NAME_B = [
    "Industrial Supply",
    "Metals",
    "Logistics",
    "Tooling",
    "Components",
    "Services",
    "Fasteners",
    "Hydraulics",
    "Office Products",
    "Engineering",
]
_NAME_C = {"US": "Inc.", "DE": "GmbH", "GB": "Ltd", "CA": "Corp."}
_CITIES = {
    "US": ("Chicago", "IL", "60601"),
    "DE": ("Stuttgart", "BW", "70173"),
    "GB": ("Birmingham", "", "B1 1AA"),
    "CA": ("Toronto", "ON", "M5H 2N2"),
}


def fmt_cents(c: int) -> str:
    """Integer cents -> Coupa decimal string ("-12.30")."""
    sign = "-" if c < 0 else ""
    c = abs(c)
    return f"{sign}{c // 100}.{c % 100:02d}"


def _mul_round(qty_h: int, price_c: int) -> int:
    """(quantity in hundredths) * (price in cents) -> cents, rounded half away from zero."""
    p = qty_h * price_c
    q, r = divmod(abs(p), 100)
    if r >= 50:
        q += 1
    return q if p >= 0 else -q
