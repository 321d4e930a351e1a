"""The Coupa sandbox's data: :class:`CoupaState` (suppliers, purchase orders, invoices, history records).

Invariants: one ``RLock`` (``lock``) guards all data; records are stored as Coupa answers them (hyphenated
keys, JSON values) and handed out as the stored objects (callers copy before serialising); every change
through :meth:`CoupaState.touch`/:meth:`CoupaState.add`/:meth:`CoupaState.add_payments` gets an
``updated-at`` strictly after every ``updated-at`` already stored (so an ``updated-at`` watermark never
misses a change), while :meth:`CoupaState.set_exported` deliberately leaves ``updated-at`` alone; payments
are appended, never merged; the filterable attributes of a resource are the base ones plus every key seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..seed import SeedData
from .common import BASE_ATTRS, RESOURCES, _copy, _norm, iso_z, parse_dt


class CoupaState:
    """Thread-safe in-memory store; every method can be used directly from tests."""

    def __init__(self, seed: SeedData | None = None, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.suppliers: dict[int, dict] = {}
        self.purchase_orders: dict[int, dict] = {}
        self.invoices: dict[int, dict] = {}
        self.integration_history_records: list[dict] = []
        self._attrs: dict[str, set[str]] = {r: set(BASE_ATTRS[r]) for r in RESOURCES}
        self._next_payment_id = 1
        self._max_updated = 0.0
        if seed is not None:
            for resource, records in (
                ("suppliers", seed.coupa_suppliers),
                ("purchase_orders", seed.coupa_purchase_orders),
                ("invoices", seed.coupa_invoices),
            ):
                store = self._store(resource)
                for rec in _copy(records):
                    store[int(rec["id"])] = rec
                    self._note(resource, rec)
            for inv in self.invoices.values():
                for p in inv.get("payments") or []:
                    self._next_payment_id = max(self._next_payment_id, int(p.get("id", 0)) + 1)

    # -- helpers
    def _store(self, resource: str) -> dict[int, dict]:
        if resource not in ("suppliers", "purchase_orders", "invoices"):
            raise KeyError(f"unknown resource {resource!r}")
        return getattr(self, resource)

    def _note(self, resource: str, rec: dict) -> None:
        self._attrs[resource].update(rec.keys())
        upd = parse_dt(rec.get("updated-at"))
        if upd is not None:
            self._max_updated = max(self._max_updated, upd.timestamp())

    def now_iso(self) -> str:
        """A fresh updated-at: wall clock, but strictly after every updated-at already stored."""
        with self.lock:
            ts = max(float(int(self.clock())), self._max_updated + 1)
            self._max_updated = ts
            return iso_z(ts)

    def attrs(self, resource: str) -> set[str]:
        return self._attrs[resource]

    def records(self, resource: str) -> list[dict]:
        with self.lock:
            if resource == "integration_history_records":
                return list(self.integration_history_records)
            return list(self._store(resource).values())

    def get(self, resource: str, id: int) -> dict | None:
        with self.lock:
            if resource == "integration_history_records":
                return next((r for r in self.integration_history_records if r["id"] == id), None)
            return self._store(resource).get(id)

    # -- public mutation API
    def touch(self, resource: str, id: int, **changes: Any) -> dict:
        """Apply changes (keys with ``_`` become ``-``) and bump updated-at; returns the record."""
        with self.lock:
            rec = self.get(resource, int(id))
            if rec is None:
                raise KeyError(f"{resource}/{id} not found")
            for key, value in changes.items():
                rec[_norm(key)] = value
            rec["updated-at"] = self.now_iso()
            if resource != "integration_history_records":
                self._note(resource, rec)
            return rec

    def add(self, resource: str, record: dict) -> dict:
        """Insert a record (hyphenated keys); assigns ``id`` and timestamps when missing."""
        with self.lock:
            rec = {_norm(k): v for k, v in _copy(record).items()}
            if resource == "integration_history_records":
                store_ids = [r["id"] for r in self.integration_history_records]
            else:
                store_ids = list(self._store(resource).keys())
            if rec.get("id") is None:
                rec["id"] = max(store_ids, default=0) + 1
            rec["id"] = int(rec["id"])
            if rec["id"] in store_ids:
                raise ValueError(f"{resource}/{rec['id']} already exists")
            now = self.now_iso()
            rec.setdefault("created-at", now)
            rec.setdefault("updated-at", now)
            if resource in ("purchase_orders", "invoices"):
                rec.setdefault("exported", False)
                rec.setdefault("last-exported-at", None)
            if resource == "invoices":
                rec.setdefault("payments", [])
            if resource == "integration_history_records":
                rec.setdefault("resolved", False)
                self.integration_history_records.append(rec)
            else:
                self._store(resource)[rec["id"]] = rec
                self._note(resource, rec)
            return rec

    def set_exported(self, resource: str, id: int, exported: bool) -> dict:
        with self.lock:
            rec = self.get(resource, id)
            if rec is None:
                raise KeyError(id)
            rec["exported"] = exported
            rec["last-exported-at"] = iso_z(self.clock()) if exported else None
            return rec

    def add_payments(self, invoice_id: int, header: dict, payments: list[dict]) -> dict:
        with self.lock:
            inv = self.invoices[invoice_id]
            now = self.now_iso()
            for key in ("paid", "payment-date", "payment-notes"):
                if key in header:
                    inv[key] = header[key]
            if "custom-fields" in header:
                inv["custom-fields"] = {**(inv.get("custom-fields") or {}), **header["custom-fields"]}
            rows = inv.setdefault("payments", [])
            for p in payments:
                row = {
                    "id": self._next_payment_id,
                    **p,
                    "payable-type": "InvoiceHeader",
                    "payable-id": invoice_id,
                    "created-at": now,
                    "updated-at": now,
                }
                self._next_payment_id += 1
                rows.append(row)
            inv["updated-at"] = now
            return inv
