"""Durable staging of verified webhook events: the hand-over between the receiver and the sensor.

The directory is the source of truth (no cursor needed; resetting the sensor is harmless)::

    WEBHOOK_STAGING_DIR/
      tmp/                       partial writes (never read)
      incoming/<key>.json        accepted events, not yet in a run            (receiver writes)
      batches/<batch>/batch.json a batch handed to a run: attempt and run_key (sensor writes)
      batches/<batch>/<key>.json its events
      processed/<key>.json       events whose run succeeded                   (sensor moves)
      failed/<key>.json          events whose runs failed every attempt, with the reason

``key`` is derived from the ``webhook-id`` header alone, so a redelivery (same id) finds its event in
any of these places and stages nothing new. Every write is: temporary file, fsync, atomic link or
rename, directory fsync — an answer 2xx is only given after that, and a crash at any point leaves
either the whole event or nothing. Plain Python: no Dagster.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, StrictInt

from ..common.files import make_private_dirs, write_private_temporary

RUN_KEY_PREFIX = "coupa-webhooks"


class EventType(StrEnum):
    INVOICE_APPROVED = "invoice.approved"
    INVOICE_UPDATED = "invoice.updated"
    INVOICE_VOIDED = "invoice.voided"
    PURCHASE_ORDER_ISSUED = "purchase_order.issued"
    PURCHASE_ORDER_CHANGED = "purchase_order.changed"
    PURCHASE_ORDER_CANCELLED = "purchase_order.cancelled"
    SUPPLIER_CREATED = "supplier.created"
    SUPPLIER_UPDATED = "supplier.updated"

    @property
    def doc_type(self) -> str:
        """The ledger's document type: ``invoice``, ``purchase_order`` or ``supplier``."""
        return self.value.split(".", 1)[0]


CoupaId = Annotated[StrictInt, Field(gt=0, lt=2**63)]


class StagedEvent(BaseModel):
    """One accepted event as staged on disk. Only the document id is trusted as a pointer: the
    pipeline re-reads the document from Coupa before it writes anything."""

    webhook_id: str
    event_type: EventType
    coupa_id: CoupaId
    updated_at: datetime
    event_timestamp: datetime
    received_at: datetime
    failure: str | None = None  # set when the event ends in failed/

    @property
    def doc_type(self) -> str:
        return self.event_type.doc_type

    @property
    def key(self) -> str:
        return event_key(self.webhook_id)


class BatchState(BaseModel):
    batch_id: str
    attempt: int = 1
    created_at: datetime
    last_error: str | None = None

    @property
    def run_key(self) -> str:
        """Derived from the batch content (its id is a digest of the event keys) and the attempt:
        a re-evaluated tick asks for the same key (Dagster launches it once); a retry after a
        failed run asks for a new one (Dagster never re-launches a key whose run failed)."""
        return f"{RUN_KEY_PREFIX}-{self.batch_id}-{self.attempt}"


class StageOutcome(StrEnum):
    STAGED = "staged"
    DUPLICATE = "duplicate"


class Place(StrEnum):
    TMP = "tmp"
    INCOMING = "incoming"
    BATCHES = "batches"
    PROCESSED = "processed"
    FAILED = "failed"


def event_key(webhook_id: str) -> str:
    return hashlib.sha256(webhook_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temporary(tmp_dir: Path, data: bytes) -> Path:
    return write_private_temporary(tmp_dir / f"{uuid.uuid4().hex}.tmp", data)


@dataclass(frozen=True)
class ReadyEvent:
    key: str
    path: Path
    mtime_ns: int


class WebhookStaging:
    """The staging directory. Safe to share between one receiver process (or several) and the
    sensor: every state change is one atomic link/rename within the same filesystem."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def dir(self, place: Place) -> Path:
        return self.root / place.value

    def ensure(self) -> WebhookStaging:
        for place in Place:
            make_private_dirs(self.dir(place))
        return self

    def exists(self) -> bool:
        return self.dir(Place.INCOMING).is_dir()

    # ----------------------------------------------------------------- receiver side
    def known(self, key: str) -> bool:
        name = f"{key}.json"
        if any((self.dir(p) / name).exists() for p in (Place.INCOMING, Place.PROCESSED, Place.FAILED)):
            return True
        return any((batch / name).exists() for batch in self._batch_dirs())

    def stage(self, event: StagedEvent) -> StageOutcome:
        """Durably stage ``event`` unless an event with its ``webhook_id`` is already staged
        (anywhere: incoming, in a batch, processed or failed). Returns only once the file and its
        directory entry are on disk."""
        key = event.key
        if self.known(key):
            return StageOutcome.DUPLICATE
        temporary = _write_temporary(self.dir(Place.TMP), event.model_dump_json().encode())
        target = self.dir(Place.INCOMING) / f"{key}.json"
        try:
            os.link(temporary, target)  # atomic and never replaces: a concurrent twin loses here
        except FileExistsError:
            return StageOutcome.DUPLICATE
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return StageOutcome.STAGED

    # ----------------------------------------------------------------- sensor side
    def ready(self, limit: int) -> list[ReadyEvent]:
        """Up to ``limit`` incoming events, oldest first (by arrival)."""
        found: list[ReadyEvent] = []
        with os.scandir(self.dir(Place.INCOMING)) as entries:
            for entry in entries:
                if entry.name.endswith(".json") and entry.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        found.append(ReadyEvent(entry.name[:-5], Path(entry.path), entry.stat().st_mtime_ns))
        found.sort(key=lambda e: (e.mtime_ns, e.key))
        return found[:limit]

    def count(self, place: Place) -> int:
        directory = self.dir(place)
        if not directory.is_dir():
            return 0
        if place is Place.BATCHES:
            return sum(1 for _ in self._batch_dirs())
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if e.name.endswith(".json"))

    def claim(self, keys: Iterable[str], now: datetime | None = None) -> BatchState:
        """Move these incoming events into a new batch (attempt 1). The batch file is written
        first, so a crash midway leaves a valid batch holding the events moved so far."""
        keys = sorted(keys)
        batch_id = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        batch_dir = self.dir(Place.BATCHES) / batch_id
        make_private_dirs(batch_dir)
        state_path = batch_dir / "batch.json"
        if state_path.exists():
            state = BatchState.model_validate_json(state_path.read_bytes())
        else:
            state = BatchState(batch_id=batch_id, created_at=now or datetime.now(UTC))
            self._write_state(batch_dir, state)
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.dir(Place.INCOMING) / f"{key}.json", batch_dir / f"{key}.json")
        _fsync_dir(batch_dir)
        _fsync_dir(self.dir(Place.INCOMING))
        return state

    def batches(self) -> list[BatchState]:
        states = []
        for batch_dir in self._batch_dirs():
            try:
                states.append(BatchState.model_validate_json((batch_dir / "batch.json").read_bytes()))
            except FileNotFoundError:  # created, crashed before its state file: give its events back
                self._return_to_incoming(batch_dir)
        return sorted(states, key=lambda s: (s.created_at, s.batch_id))

    def events(self, batch_id: str) -> list[StagedEvent]:
        batch_dir = self.dir(Place.BATCHES) / batch_id
        if not batch_dir.is_dir():
            raise FileNotFoundError(
                f"webhook batch {batch_id} is not in {self.dir(Place.BATCHES)}: it was finished already, "
                "or WEBHOOK_STAGING_DIR differs between the sensor and the run"
            )
        return [
            StagedEvent.model_validate_json(path.read_bytes())
            for path in sorted(batch_dir.glob("*.json"))
            if path.name != "batch.json"
        ]

    def retry(self, state: BatchState, error: str) -> BatchState:
        """The batch's run failed: next attempt, new run key."""
        new_state = state.model_copy(update={"attempt": state.attempt + 1, "last_error": error})
        self._write_state(self.dir(Place.BATCHES) / state.batch_id, new_state)
        return new_state

    def complete(self, batch_id: str) -> int:
        """The batch's run succeeded: its events go to processed/."""
        return self._finish(batch_id, Place.PROCESSED, failure=None)

    def fail(self, batch_id: str, reason: str) -> int:
        """Every attempt failed: the events go to failed/, each with the reason."""
        return self._finish(batch_id, Place.FAILED, failure=reason)

    def failed_events(self, limit: int = 1000) -> list[StagedEvent]:
        events = []
        for path in sorted(self.dir(Place.FAILED).glob("*.json"))[:limit]:
            with contextlib.suppress(FileNotFoundError, ValueError):
                events.append(StagedEvent.model_validate_json(path.read_bytes()))
        return events

    def requeue_failed(self) -> int:
        """Operator action: give failed events another round (back to incoming/)."""
        moved = 0
        for path in sorted(self.dir(Place.FAILED).glob("*.json")):
            event = StagedEvent.model_validate_json(path.read_bytes()).model_copy(update={"failure": None})
            self._replace_file(self.dir(Place.INCOMING) / path.name, event.model_dump_json().encode())
            path.unlink()
            moved += 1
        _fsync_dir(self.dir(Place.FAILED))
        return moved

    def filesystem_now(self) -> float:
        """The staging filesystem's clock (the mtime of a file written now). Ages of staged files are
        measured against it, not against this host's clock: on shared storage the two may differ."""
        probe = _write_temporary(self.dir(Place.TMP), b"")
        try:
            return probe.stat().st_mtime
        finally:
            probe.unlink(missing_ok=True)

    def oldest_incoming_age_s(self) -> float:
        """Seconds the oldest incoming event has waited for a run (0 when none waits)."""
        oldest = self.ready(limit=1)
        return max(0.0, self.filesystem_now() - oldest[0].mtime_ns / 1e9) if oldest else 0.0

    def prune_processed(self, max_age: timedelta) -> int:
        """Forget processed events older than ``max_age`` (after that a redelivery of the same
        webhook-id is staged again; harmless, the pipeline re-reads Coupa and the ledger dedupes)."""
        cutoff = self.filesystem_now() - max_age.total_seconds()
        removed = 0
        with os.scandir(self.dir(Place.PROCESSED)) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    # ----------------------------------------------------------------- internals
    def _batch_dirs(self) -> Iterator[Path]:
        root = self.dir(Place.BATCHES)
        if not root.is_dir():
            return
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_dir():
                    yield Path(entry.path)

    def _write_state(self, batch_dir: Path, state: BatchState) -> None:
        self._replace_file(batch_dir / "batch.json", state.model_dump_json().encode())

    def _replace_file(self, target: Path, data: bytes) -> None:
        temporary = _write_temporary(self.dir(Place.TMP), data)
        os.replace(temporary, target)
        _fsync_dir(target.parent)

    def _finish(self, batch_id: str, place: Place, failure: str | None) -> int:
        batch_dir = self.dir(Place.BATCHES) / batch_id
        moved = 0
        for path in sorted(batch_dir.glob("*.json")):
            if path.name == "batch.json":
                continue
            target = self.dir(place) / path.name
            if failure is not None:
                event = StagedEvent.model_validate_json(path.read_bytes()).model_copy(update={"failure": failure})
                self._replace_file(target, event.model_dump_json().encode())
                path.unlink()
            else:
                os.replace(path, target)
            moved += 1
        _fsync_dir(self.dir(place))
        shutil.rmtree(batch_dir, ignore_errors=True)
        _fsync_dir(self.dir(Place.BATCHES))
        return moved

    def _return_to_incoming(self, batch_dir: Path) -> None:
        for path in batch_dir.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, self.dir(Place.INCOMING) / path.name)
        shutil.rmtree(batch_dir, ignore_errors=True)


def summary(staging: WebhookStaging) -> dict[str, Any]:
    return {place.value: staging.count(place) for place in (Place.INCOMING, Place.BATCHES, Place.FAILED)}
