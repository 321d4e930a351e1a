"""Staged Coupa documents and incremental watermarks.

One row per (document type, Coupa id) — unique — holding the latest Coupa JSON we read, so every
later step (mapping, D365 writes, replay) works from what Coupa said at that time.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from ..common.files import create_private_file, make_private_dirs
from .database_url import connect_error, missing_driver, parse_url, unwritable_sqlite

metadata = sa.MetaData()

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
    return _create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _create_engine(url: sa.engine.URL, **kwargs: Any) -> Engine:
    try:
        return sa.create_engine(url, **kwargs)
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise missing_driver(url, exc) from None


SCHEMA_LOCK_ID = 4_365_001  # PostgreSQL advisory lock: processes starting together create tables one at a time


def _create_missing(conn: sa.engine.Connection) -> None:
    """CREATE TABLE/INDEX IF NOT EXISTS: the check and the create are one statement, so a second
    process creating the same table at the same moment is a no-op instead of an error."""
    for table in metadata.sorted_tables:
        conn.execute(sa.schema.CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))


def _add_missing_columns(conn: sa.engine.Connection) -> None:
    """Additive upgrade of databases created by an earlier version: columns added since (all
    nullable or with a server default) are added in place; nothing is dropped or rewritten."""
    inspector = sa.inspect(conn)
    existing_tables = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(
                    f"the sync database table {table.name} lacks column {column.name}, which cannot "
                    "be added in place; migrate the database or point SYNC_DATABASE_URL at a new one"
                )
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(dialect=conn.dialect)}"
            if column.server_default is not None:
                default = column.server_default.arg  # type: ignore[union-attr]
                text = default.compile(dialect=conn.dialect) if hasattr(default, "compile") else f"'{default}'"
                ddl += f" DEFAULT {text}"
            try:
                conn.execute(sa.text(ddl))
            except OperationalError as exc:  # SQLite: another process added it a moment ago
                if "duplicate column" not in str(exc).lower():
                    raise


_ensured: weakref.WeakKeyDictionary[Engine, frozenset[str]] = weakref.WeakKeyDictionary()
_ensured_lock = threading.Lock()


def ensure_schema(engine: Engine) -> None:
    """Create the connector's tables when missing; safe when several step processes of the first
    run start at once (SQLite: IF NOT EXISTS under SQLite's write lock; PostgreSQL: additionally
    serialized by an advisory lock, because concurrent IF NOT EXISTS can still collide on the
    catalog's unique indexes there). Done once per engine and set of tables: the store, the ledger
    and the status events of one step share an engine, and each asks."""
    tables = frozenset(metadata.tables)
    with _ensured_lock:
        if _ensured.get(engine) == tables:
            return
    try:
        connection = engine.connect()
    except sa_exc.DBAPIError as exc:  # the first connection of a process: explain, never show the password
        raise connect_error(engine.url, exc) from None
    with connection as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": SCHEMA_LOCK_ID})
        _create_missing(conn)
        _add_missing_columns(conn)
    with _ensured_lock:
        _ensured[engine] = tables


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
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(staged_documents.c.payload)
                .where(staged_documents.c.doc_type == doc_type)
                .order_by(staged_documents.c.coupa_id)
            ).scalars()
            return [json.loads(r) for r in rows]

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

    def documents_updated_between(self, doc_type: str, start: str, end: str) -> list[dict[str, Any]]:
        """Staged documents whose Coupa updated-at (normalized UTC text) is in [start, end)."""
        c = staged_documents.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.payload)
                .where((c.doc_type == doc_type) & (c.coupa_updated_at >= start) & (c.coupa_updated_at < end))
                .order_by(c.coupa_id)
            )
            return [json.loads(r) for r in rows.scalars()]

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
