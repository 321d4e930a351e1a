"""Staged Coupa documents and incremental watermarks.

One row per (document type, Coupa id) — unique — holding the latest Coupa JSON we read, so every
later step (mapping, D365 writes, replay) works from what Coupa said at that time.

``metadata`` holds every table of the sync database (this module's and those of :mod:`.ledger_schema`,
:mod:`.status`, :mod:`.dmf_executions`); the database itself is created and migrated by the Alembic
scripts in ``migrations/`` (:mod:`.migrate`), which the tables here must match (a test compares them).
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import Engine

from ..common.files import create_private_file, make_private_dirs
from .database_url import connect_error, missing_driver, parse_url, unwritable_sqlite
from .migrate import ensure_current, translate_map

metadata = sa.MetaData()
READ_PAGE_SIZE = 1000  # staged documents parsed at once by iter_documents (about 16 MB of invoices)

staged_documents = sa.Table(
    "staged_documents",
    metadata,
    sa.Column("doc_type", sa.String(32), nullable=False),
    sa.Column("coupa_id", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(64)),
    sa.Column("coupa_updated_at", sa.String(40), nullable=False),
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("fetched_at", sa.String(40), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.PrimaryKeyConstraint("doc_type", "coupa_id", name="pk_staged_documents"),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("fetched_at", sa.String(40), nullable=False),
)

watermarks = sa.Table(
    "watermarks",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)


@dataclass(frozen=True)
class Rejected:
    """A record staging could not store, and why (it is reported, never stops the others)."""

    coupa_id: Any
    reason: str


@dataclass
class StageResult:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.new + self.changed + self.unchanged


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def coupa_id_of(value: Any) -> int | None:
    """A Coupa record id as an int — Coupa ids are whole numbers (JSON integers; digits as text are
    accepted) — or None for anything else (``"abc"``, ``True``, ``1.5``, missing)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip()) or None
    return None


def id_problem(value: Any) -> str:
    return (
        "the document has no id" if value is None else f"the id {str(value)[:40]!r} is not a Coupa id (a whole number)"
    )


def db_text(value: Any, limit: int | None = None) -> str | None:
    """Text safe for any column: NUL (which PostgreSQL text cannot hold) written as ``\\x00``,
    cut to the column's size."""
    if value is None:
        return None
    text = str(value).replace("\x00", "\\x00")
    return text[:limit] if limit is not None else text


def normalize_timestamp(value: Any) -> str:
    """Coupa timestamps carry offsets (``-08:00``); store them as sortable UTC text ``...Z``
    (anything unparseable is kept as text, NUL-free and within the column)."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return db_text(value, 40) or ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_engine(database_url: str) -> Engine:
    """An engine for SYNC_DATABASE_URL; a URL that cannot work (unparseable, driver not installed,
    SQLite directory not creatable) raises ConfigError naming the variable and the fix."""
    url = parse_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if path and path != ":memory:" and not path.startswith("file:"):
            try:  # owner-only: the ledger and staged documents are business data
                make_private_dirs(Path(path).parent)
                create_private_file(Path(path))
            except OSError as exc:
                raise unwritable_sqlite(url, path, exc) from None
        engine = _create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL: readers never block the writer; NORMAL: durable at checkpoints, fast commits.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    connect_args = (
        {"connect_timeout": 15}
        if url.drivername in ("postgresql", "postgresql+psycopg2") and "connect_timeout" not in url.query
        else {}
    )
    # PostgreSQL: our tables live in their own schema (the database may be Dagster's too)
    mapping = translate_map(url.get_backend_name())
    options = {"schema_translate_map": mapping} if mapping else {}
    return _create_engine(url, pool_pre_ping=True, connect_args=connect_args, execution_options=options)


def _create_engine(url: sa.engine.URL, **kwargs: Any) -> Engine:
    try:
        return sa.create_engine(url, **kwargs)
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise missing_driver(url, exc) from None


_ensured: weakref.WeakSet[Engine] = weakref.WeakSet()
_ensured_lock = threading.Lock()


def ensure_schema(engine: Engine) -> None:
    """Bring the sync database to the code's schema (Alembic, see :mod:`.migrate`): one read when it
    is current; otherwise the first process takes the lock and upgrades while the others wait, so the
    step processes of a first run starting at once never collide. A database newer than the code, or
    one this process may not upgrade, raises :class:`.migrate.SyncSchemaError` naming what to run.
    Done once per engine: the store, the ledger and the status events of one step share one."""
    with _ensured_lock:
        if engine in _ensured:
            return
    try:
        connection = engine.connect()
    except sa_exc.DBAPIError as exc:  # the first connection of a process: explain, never show the password
        raise connect_error(engine.url, exc) from None
    with connection as conn:
        ensure_current(conn)
    with _ensured_lock:
        _ensured.add(engine)


class SyncStore:
    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        ensure_schema(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def _dialect_insert(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _insert_ignoring_conflicts(self) -> Any:
        return self._dialect_insert(staged_documents).on_conflict_do_nothing(index_elements=["doc_type", "coupa_id"])

    def _upsert(self, table: sa.Table, key: str, values: dict[str, Any]) -> None:
        statement = self._dialect_insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[key], set_={k: v for k, v in values.items() if k != key}
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    def stage(self, doc_type: str, records: Iterable[dict[str, Any]], run_id: str | None = None) -> StageResult:
        """Upsert the latest Coupa JSON per document; safe when several runs stage the same records.

        Whatever a record holds is stored: the JSON text escapes NUL (``\\u0000``) and round-trips;
        the status and updated-at columns get NUL-free text within their size. A record without a
        usable Coupa id cannot be keyed: it is listed in ``rejected`` with the reason, and the
        others are staged."""
        result = StageResult()
        insert = self._insert_ignoring_conflicts()
        with self.engine.begin() as conn:
            for record in records:
                raw_id = record.get("id") if isinstance(record, dict) else None
                coupa_id = coupa_id_of(raw_id)
                if coupa_id is None:
                    result.rejected.append(Rejected(raw_id, id_problem(raw_id)))
                    continue
                digest = payload_hash(record)
                key = (staged_documents.c.doc_type == doc_type) & (staged_documents.c.coupa_id == coupa_id)
                values = {
                    "status": db_text(record.get("status"), 64),
                    "coupa_updated_at": normalize_timestamp(record.get("updated-at")),
                    "payload_sha256": digest,
                    "payload": json.dumps(record, default=str),
                    "fetched_at": _now(),
                    "run_id": run_id,
                }
                existing = conn.execute(sa.select(staged_documents.c.payload_sha256).where(key)).scalar_one_or_none()
                if existing is None:
                    inserted = conn.execute(insert.values(doc_type=doc_type, coupa_id=coupa_id, **values))
                    if inserted.rowcount == 1:
                        result.new += 1
                        continue
                    existing = conn.execute(sa.select(staged_documents.c.payload_sha256).where(key)).scalar_one()
                if existing != digest:
                    conn.execute(staged_documents.update().where(key).values(**values))
                    result.changed += 1
                else:
                    result.unchanged += 1
        return result

    def documents(self, doc_type: str) -> list[dict[str, Any]]:
        return list(self.iter_documents(doc_type))

    def iter_documents(self, doc_type: str, page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every staged document of ``doc_type`` in id order, read ``page_size`` at a time (keyset
        pages, no cursor held open between them): memory stays one page whatever the store holds."""
        c = staged_documents.c
        size = page_size or READ_PAGE_SIZE
        after: int | None = None
        while True:
            query = sa.select(c.coupa_id, c.payload).where(c.doc_type == doc_type)
            if after is not None:
                query = query.where(c.coupa_id > after)
            with self.engine.connect() as conn:
                page = conn.execute(query.order_by(c.coupa_id).limit(size)).all()
            for _, payload in page:
                yield json.loads(payload)
            if len(page) < size:
                return
            after = int(page[-1][0])

    def count(self, doc_type: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(staged_documents)
                    .where(staged_documents.c.doc_type == doc_type)
                ).scalar_one()
            )

    def documents_by_id(self, doc_type: str, coupa_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = [int(i) for i in coupa_ids]
        found: dict[int, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    sa.select(staged_documents.c.coupa_id, staged_documents.c.payload).where(
                        (staged_documents.c.doc_type == doc_type) & staged_documents.c.coupa_id.in_(chunk)
                    )
                )
                found.update({int(cid): json.loads(payload) for cid, payload in rows})
        return found

    def refs_updated_between(self, doc_type: str, start: str, end: str) -> list[tuple[int, str | None]]:
        """(Coupa id, status) of the staged documents whose updated-at is in [start, end), in id order:
        what a run decides on before it reads the documents themselves, a chunk at a time."""
        c = staged_documents.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.coupa_id, c.status)
                .where((c.doc_type == doc_type) & (c.coupa_updated_at >= start) & (c.coupa_updated_at < end))
                .order_by(c.coupa_id)
            )
            return [(int(coupa_id), status) for coupa_id, status in rows]

    def save_snapshot(self, name: str, payload: Any) -> None:
        self._upsert(
            snapshots, "name", {"name": name, "payload": json.dumps(payload, default=str), "fetched_at": _now()}
        )

    def load_snapshot(self, name: str) -> Any | None:
        with self.engine.connect() as conn:
            text = conn.execute(sa.select(snapshots.c.payload).where(snapshots.c.name == name)).scalar_one_or_none()
        return json.loads(text) if text is not None else None

    def get_watermark(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(watermarks.c.value).where(watermarks.c.name == name)).scalar_one_or_none()

    def set_watermark(self, name: str, value: str) -> None:
        self._upsert(watermarks, "name", {"name": name, "value": value, "updated_at": _now()})
