"""The write path for a new document (header + lines, invoices and purchase orders), behind one
interface so a bulk route (the D365 Data Management package API) can sit beside the per-record
OData route.

Invariant: header and lines are created together or not at all, and an ambiguous outcome (a
timeout or dropped connection after the request left) is never retried blindly — the caller settles
it by looking the header up under the key it chose (:meth:`sync.base.DocumentSync._create_document`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..d365.batch import BatchOperation, Changeset
from ..d365.client import D365Client, D365Error


@dataclass
class WriteResult:
    ok: bool
    status: int | None = None
    error: D365Error | None = None


class DocumentWriter(Protocol):
    route: str

    def create(self, header: dict[str, Any], lines: list[dict[str, Any]]) -> WriteResult:
        """Create header and lines together, or nothing."""
        ...


class ODataBatchWriter:
    """Header and lines in one ``$batch`` changeset: D365 applies all of it or none of it, so a
    failure never leaves a header without its lines. The header key (HeaderReference of an invoice,
    PurchaseOrderNumber of a PO) is chosen by us, which is what lets the lines reference it inside
    the same changeset."""

    route = "odata"

    def __init__(self, d365: D365Client, header_set: str, line_set: str) -> None:
        self.d365 = d365
        self.header_set = header_set
        self.line_set = line_set

    def create(self, header: dict[str, Any], lines: list[dict[str, Any]]) -> WriteResult:
        operations = [BatchOperation("POST", self.header_set, header)]
        operations += [BatchOperation("POST", self.line_set, line) for line in lines]
        result = self.d365.batch([Changeset(operations)])[0]
        if result.ok:
            return WriteResult(ok=True, status=201)
        return WriteResult(ok=False, status=result.error.status if result.error else None, error=result.error)
