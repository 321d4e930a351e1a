"""The D365 sandbox's entity store: tables, versions (ETags), number sequences, changesets.

:class:`EntityStore` holds every entity set of the schema as ``key tuple -> record`` (keys compared
case-insensitively), with coerced Python values and every property filled with its F&O default. It knows
nothing of business rules: validation (:mod:`.validation`), the purchase-order lifecycle
(:mod:`.purchase_orders`) and the create/update/delete semantics (:mod:`.state`) build on it; the simulated AP
user (:mod:`.ap_user`) operates on it.

Invariants:

- One ``RLock`` (``lock``) guards all data; every read or write takes it.
- Every change goes through the journal-aware primitives (``_put``, ``_remove``, ``_next``,
  ``_mark_posted``), so a changeset opened with :meth:`EntityStore.begin` is undone exactly by
  :meth:`EntityStore.rollback` (including consumed number-sequence values).
- Each ``_put`` gives the record a new, strictly increasing version; its ETag derives from it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from .entities import CASCADES, DEFAULT_NUMBER_SEQUENCES, ENTITY_INFO
from .odata import WRITE_EXCEPTION, ODataError, _bad_request, _etag, _norm, _same
from .schema import D365Schema, EntitySchema, ValueConversionError, check_text, load_schema


class EntityStore:
    """Tables of all entity sets plus the primitives every write goes through. Thread-safe (one RLock)."""

    def __init__(
        self,
        schema: D365Schema | None = None,
        *,
        default_company: str = "dat",
        dimension_format: list[str] | None = None,
        dimension_delimiter: str = "-",
        number_sequences: dict[str, tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.schema = schema or load_schema()
        self.clock = clock
        self.lock = threading.RLock()
        self.default_company = default_company.lower()
        self.dimension_format = list(dimension_format or ["BusinessUnit", "CostCenter", "Department"])
        self.dimension_delimiter = dimension_delimiter
        self.number_sequences = dict(DEFAULT_NUMBER_SEQUENCES if number_sequences is None else number_sequences)
        self._tables: dict[str, dict[tuple, dict[str, Any]]] = {name: {} for name in self.schema.entity_sets}
        self._versions: dict[tuple[str, tuple], int] = {}
        self._counters: dict[str, int] = {}
        self._version_seq = 68719476736
        self._journal: list[Callable[[], None]] | None = None
        self.posted_header_refs: set[tuple[str, str]] = set()
        self.posting_log: list[dict[str, Any]] = []

    # ---- low-level, journal-aware primitives --------------------------------------------------
    def _schema(self, entity_set: str) -> EntitySchema:
        sch = self.schema.get(entity_set)
        if sch is None:
            raise KeyError(f"unknown entity set {entity_set!r}")
        return sch

    def _key(self, sch: EntitySchema, rec: dict[str, Any]) -> tuple:
        return tuple(_norm(rec.get(k)) for k in sch.keys)

    def _put(self, entity_set: str, key: tuple, rec: dict[str, Any]) -> int:
        table = self._tables[entity_set]
        old = table.get(key)
        old_version = self._versions.get((entity_set, key))
        table[key] = rec
        self._version_seq += 1
        self._versions[(entity_set, key)] = self._version_seq
        if self._journal is not None:

            def undo() -> None:
                if old is None:
                    table.pop(key, None)
                    self._versions.pop((entity_set, key), None)
                else:
                    table[key] = old
                    self._versions[(entity_set, key)] = old_version  # type: ignore[assignment]

            self._journal.append(undo)
        return self._version_seq

    def _remove(self, entity_set: str, key: tuple) -> None:
        table = self._tables[entity_set]
        old = table.pop(key)
        old_version = self._versions.pop((entity_set, key), None)
        if self._journal is not None:

            def undo() -> None:
                table[key] = old
                if old_version is not None:
                    self._versions[(entity_set, key)] = old_version

            self._journal.append(undo)

    def _next(self, counter: str, start: int = 1) -> int:
        old = self._counters.get(counter)
        value = (old if old is not None else start - 1) + 1
        self._counters[counter] = value
        if self._journal is not None:

            def undo() -> None:
                if old is None:
                    self._counters.pop(counter, None)
                else:
                    self._counters[counter] = old

            self._journal.append(undo)
        return value

    def _mark_posted(self, item: tuple[str, str]) -> None:
        self.posted_header_refs.add(item)
        if self._journal is not None:
            self._journal.append(lambda: self.posted_header_refs.discard(item))

    # ---- transactions (changesets) ------------------------------------------------------------
    def begin(self) -> None:
        """Start an atomic unit; caller must hold ``lock`` until commit()/rollback()."""
        self.lock.acquire()
        self._journal = []

    def commit(self) -> None:
        self._journal = None
        self.lock.release()

    def rollback(self) -> None:
        journal, self._journal = self._journal or [], None
        for undo in reversed(journal):
            undo()
        self.lock.release()

    # ---- public helpers -----------------------------------------------------------------------
    def records(self, entity_set: str) -> list[dict]:
        """All records of all companies (copies, raw Python values)."""
        self._schema(entity_set)
        with self.lock:
            return [dict(r) for r in self._tables[entity_set].values()]

    def etag_of(self, entity_set: str, rec: dict[str, Any]) -> str:
        sch = self._schema(entity_set)
        return _etag(self._versions.get((entity_set, self._key(sch, rec)), 0))

    def companies(self) -> set[str]:
        return {str(r.get("LegalEntityId", "")).casefold() for r in self._tables.get("LegalEntities", {}).values()} | {
            self.default_company
        }

    def find(self, entity_set: str, **conds: Any) -> list[dict[str, Any]]:
        """Records whose properties equal ``conds`` (case-insensitive for strings)."""
        with self.lock:
            return [
                dict(r)
                for r in self._tables.get(entity_set, {}).values()
                if all(_same(r.get(k), v) for k, v in conds.items())
            ]

    def _exists(self, entity_sets: Iterable[str], **conds: Any) -> bool:
        for es in entity_sets:
            sch = self.schema.get(es)
            if sch is None:
                continue
            if set(conds) == set(sch.keys):
                if tuple(_norm(conds[k]) for k in sch.keys) in self._tables[es]:
                    return True
                continue
            if any(all(_same(r.get(k), v) for k, v in conds.items()) for r in self._tables[es].values()):
                return True
        return False

    # ---- reads --------------------------------------------------------------------------------
    def scoped_rows(self, entity_set: str, cross_company: bool) -> list[dict[str, Any]]:
        sch = self._schema(entity_set)
        with self.lock:
            rows = list(self._tables[entity_set].values())
        if sch.company_scoped and not cross_company:
            rows = [r for r in rows if _same(r.get("dataAreaId"), self.default_company)]
        return rows

    def get(self, entity_set: str, key_values: dict[str, Any], cross_company: bool = True) -> dict[str, Any] | None:
        sch = self._schema(entity_set)
        if sch.company_scoped and not cross_company and not _same(key_values.get("dataAreaId"), self.default_company):
            return None
        with self.lock:
            rec = self._tables[entity_set].get(tuple(_norm(key_values.get(k)) for k in sch.keys))
            return dict(rec) if rec is not None else None

    # ---- write helpers ------------------------------------------------------------------------
    def _aot(self, sch: EntitySchema) -> tuple[str, str]:
        return ENTITY_INFO.get(sch.name, (f"{sch.type_name}Entity", f"{sch.name} ({sch.type_name})"))

    def _write_failed(self, sch: EntitySchema, infolog: list[str]) -> ODataError:
        aot, _ = self._aot(sch)
        return ODataError(
            500, f"Write failed for table row of type '{aot}'. Infolog: " + "; ".join(infolog), WRITE_EXCEPTION
        )

    def coerce_body(self, sch: EntitySchema, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request("The request body must be a JSON object describing a single entity.")
        out: dict[str, Any] = {}
        for k, v in body.items():
            if k.startswith("@") or k.startswith("odata."):
                continue  # @odata.type, @odata.etag, @odata.context are allowed annotations
            if "@" in k:
                raise _bad_request(
                    f"The property annotation '{k}' is not supported by the sandbox (no @odata.bind / deep insert)."
                )
            if k not in sch.properties:
                raise _bad_request(sch.unknown_property_message(k))
            try:
                out[k] = sch.coerce(k, v)
                if isinstance(out[k], str):
                    check_text(sch.name, k, out[k])
            except ValueConversionError as exc:
                raise _bad_request(str(exc)) from None
        return out

    def _delete_cascade(self, entity_set: str, header: dict[str, Any]) -> None:
        for child_set, links in CASCADES.get(entity_set, []):
            child_sch = self._schema(child_set)
            for child in [
                r for r in self._tables[child_set].values() if all(_same(r.get(c), header.get(p)) for p, c in links)
            ]:
                self._remove(child_set, self._key(child_sch, child))

    def _insert_raw(self, entity_set: str, data: dict[str, Any]) -> dict[str, Any]:
        sch = self._schema(entity_set)
        rec = sch.full_record(data)
        self._put(entity_set, self._key(sch, rec), rec)
        return rec

    def now(self) -> datetime:
        """The sandbox's current instant (its injected clock, not necessarily the calendar)."""
        return datetime.fromtimestamp(self.clock(), tz=UTC)
