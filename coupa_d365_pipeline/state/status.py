"""Posted and payment events read from D365, waiting to be (or already) written back to Coupa.

One row per event — (Coupa invoice, kind, D365 key) is unique — so re-reading D365 never creates a
second event, and ``pushed_at`` says whether Coupa has it. A payment is an individual event per D365
settlement (partial payments included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .store import ensure_schema, metadata

POSTED, PAYMENT = "posted", "payment"

invoice_status_events = sa.Table(
    "invoice_status_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("coupa_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("event_key", sa.String(64), nullable=False),      # posted: LedgerVoucher; payment: settlement SourceKey
    sa.Column("legal_entity", sa.String(8), nullable=False),
    sa.Column("invoice_number", sa.String(64), nullable=False),
    sa.Column("amount", sa.String(40), nullable=False),          # posted: invoice amount; payment: amount settled
    sa.Column("event_date", sa.String(40)),
    sa.Column("reference", sa.String(255)),                     # posted: voucher; payment: payment reference
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

    def record(self, *, coupa_id: int, kind: str, event_key: str, legal_entity: str, invoice_number: str,
               amount: Any, event_date: str | None, reference: str | None, run_id: str) -> bool:
        """Store an event once; True when it is new."""
        with self.engine.begin() as conn:
            result = conn.execute(self._insert().values(
                coupa_id=int(coupa_id), kind=kind, event_key=str(event_key), legal_entity=legal_entity,
                invoice_number=invoice_number, amount=str(amount), event_date=event_date, reference=reference,
                detected_at=datetime.now(timezone.utc), detected_run_id=run_id))
        return result.rowcount == 1

    def for_invoice(self, coupa_id: int) -> list[StatusEvent]:
        c = invoice_status_events.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(invoice_status_events).where(c.coupa_id == int(coupa_id)).order_by(c.id))
            return [self._event(r) for r in rows.mappings()]

    def unpushed_invoice_ids(self) -> list[int]:
        c = invoice_status_events.c
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(sa.select(c.coupa_id).where(c.pushed_at.is_(None))
                                                 .distinct().order_by(c.coupa_id)).scalars()]

    def mark_pushed(self, event_ids: list[int], run_id: str) -> None:
        if not event_ids:
            return
        c = invoice_status_events.c
        with self.engine.begin() as conn:
            conn.execute(invoice_status_events.update().where(c.id.in_(event_ids) & c.pushed_at.is_(None)).values(
                pushed_at=datetime.now(timezone.utc), pushed_run_id=run_id))

    def counts(self) -> dict[str, int]:
        c = invoice_status_events.c
        query = sa.select(c.kind, (c.pushed_at.is_not(None)).label("pushed"), sa.func.count()).group_by(
            c.kind, "pushed")
        with self.engine.connect() as conn:
            return {f"{kind}_{'pushed' if pushed else 'waiting'}": int(n) for kind, pushed, n in conn.execute(query)}

    @staticmethod
    def _event(r: Any) -> StatusEvent:
        return StatusEvent(id=int(r["id"]), coupa_id=int(r["coupa_id"]), kind=r["kind"], event_key=r["event_key"],
                           legal_entity=r["legal_entity"], invoice_number=r["invoice_number"], amount=r["amount"],
                           event_date=r["event_date"], reference=r["reference"], pushed=r["pushed_at"] is not None)
