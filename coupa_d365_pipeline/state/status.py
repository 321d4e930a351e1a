"""Posted and settlement events read from D365, waiting to be (or already) written back to Coupa.

One row per event — (Coupa invoice, kind, D365 key) is unique — so re-reading D365 (the readers
re-read an overlap on purpose) never creates a second event, and ``pushed_at`` says whether the
writer has dealt with it. Kinds (:class:`StatusKind`):

- ``posted``: D365 posted the invoice (key: LedgerVoucher);
- ``settlement``: a VendSettlement row of the invoice appeared (key: its SourceKey) — a payment, a
  credit-note application or another offset;
- ``trans_changed``: the invoice's VendTrans changed (key: SourceKey@SysModifiedDateTime#SysRecVersion),
  the only trace a reversed settlement leaves (F&O deletes its VendSettlement row);
- ``payment``: written by the first version of the status flow (one per settlement, amount without
  sign); still read, as a settlement trigger and to recognise the payments that version sent.

Settlement events are triggers: the writer reconciles Coupa with the invoice's settlements as D365
holds them *now*, so an event's amount and reference are informational.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .store import ensure_schema, metadata


class StatusKind(StrEnum):
    POSTED = "posted"
    SETTLEMENT = "settlement"
    TRANS_CHANGED = "trans_changed"
    LEGACY_PAYMENT = "payment"  # first version: one per settlement, amount as sent (no sign)


POSTED, SETTLEMENT, TRANS_CHANGED = StatusKind.POSTED, StatusKind.SETTLEMENT, StatusKind.TRANS_CHANGED
LEGACY_PAYMENT = StatusKind.LEGACY_PAYMENT
SETTLEMENT_KINDS = (SETTLEMENT, TRANS_CHANGED, LEGACY_PAYMENT)  # everything that asks for a payment reconcile

invoice_status_events = sa.Table(
    "invoice_status_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("coupa_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("event_key", sa.String(64), nullable=False),  # see StatusKind
    sa.Column("legal_entity", sa.String(8), nullable=False),
    sa.Column("invoice_number", sa.String(64), nullable=False),
    sa.Column("amount", sa.String(40), nullable=False),  # Coupa's sign: invoice amount / amount settled
    sa.Column("event_date", sa.String(40)),
    sa.Column("reference", sa.String(255)),  # posted: voucher; settlement: offset voucher
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detected_run_id", sa.String(64)),
    sa.Column("pushed_at", sa.DateTime(timezone=True)),
    sa.Column("pushed_run_id", sa.String(64)),
    sa.UniqueConstraint("coupa_id", "kind", "event_key", name="uq_invoice_status_event"),
)


@dataclass
class StatusEvent:
    id: int
    coupa_id: int
    kind: str
    event_key: str
    legal_entity: str
    invoice_number: str
    amount: str
    event_date: str | None
    reference: str | None
    pushed: bool


class StatusEvents:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        ensure_schema(engine)

    def _insert(self) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(invoice_status_events).on_conflict_do_nothing(index_elements=["coupa_id", "kind", "event_key"])

    def record(
        self,
        *,
        coupa_id: int,
        kind: str,
        event_key: str,
        legal_entity: str,
        invoice_number: str,
        amount: Any,
        event_date: str | None,
        reference: str | None,
        run_id: str,
    ) -> bool:
        """Store an event once; True when it is new."""
        with self.engine.begin() as conn:
            result = conn.execute(
                self._insert().values(
                    coupa_id=int(coupa_id),
                    kind=str(kind),
                    event_key=str(event_key),
                    legal_entity=legal_entity,
                    invoice_number=invoice_number,
                    amount=str(amount),
                    event_date=event_date,
                    reference=reference,
                    detected_at=datetime.now(UTC),
                    detected_run_id=run_id,
                )
            )
        return result.rowcount == 1

    def for_invoice(self, coupa_id: int) -> list[StatusEvent]:
        c = invoice_status_events.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(invoice_status_events).where(c.coupa_id == int(coupa_id)).order_by(c.id))
            return [self._event(r) for r in rows.mappings()]

    def invoices_with_settlements(self) -> set[int]:
        """Coupa ids of invoices with any settlement-related event (pushed or not)."""
        c = invoice_status_events.c
        with self.engine.connect() as conn:
            return {
                int(i)
                for i in conn.execute(
                    sa.select(c.coupa_id).where(c.kind.in_([str(k) for k in SETTLEMENT_KINDS])).distinct()
                ).scalars()
            }

    def unpushed_invoice_ids(self) -> list[int]:
        c = invoice_status_events.c
        with self.engine.connect() as conn:
            return [
                int(i)
                for i in conn.execute(
                    sa.select(c.coupa_id).where(c.pushed_at.is_(None)).distinct().order_by(c.coupa_id)
                ).scalars()
            ]

    def mark_pushed(self, event_ids: list[int], run_id: str) -> None:
        if not event_ids:
            return
        c = invoice_status_events.c
        with self.engine.begin() as conn:
            conn.execute(
                invoice_status_events.update()
                .where(c.id.in_(event_ids) & c.pushed_at.is_(None))
                .values(pushed_at=datetime.now(UTC), pushed_run_id=run_id)
            )

    def counts(self) -> dict[str, int]:
        c = invoice_status_events.c
        query = sa.select(c.kind, (c.pushed_at.is_not(None)).label("pushed"), sa.func.count()).group_by(
            c.kind, "pushed"
        )
        with self.engine.connect() as conn:
            return {f"{kind}_{'pushed' if pushed else 'waiting'}": int(n) for kind, pushed, n in conn.execute(query)}

    @staticmethod
    def _event(r: Any) -> StatusEvent:
        return StatusEvent(
            id=int(r["id"]),
            coupa_id=int(r["coupa_id"]),
            kind=r["kind"],
            event_key=r["event_key"],
            legal_entity=r["legal_entity"],
            invoice_number=r["invoice_number"],
            amount=r["amount"],
            event_date=r["event_date"],
            reference=r["reference"],
            pushed=r["pushed_at"] is not None,
        )
