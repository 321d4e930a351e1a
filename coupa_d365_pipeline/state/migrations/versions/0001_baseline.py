"""Baseline: the sync database as the connector created it before it had migrations.

Revision ID: 0001
Revises:

A database created by earlier versions (no version table; on PostgreSQL its tables in the schema
the connection defaulted to, usually ``public``) is adopted at this revision by
:mod:`coupa_d365_pipeline.state.migrate`: its tables are moved into the connector's schema, columns
added since its version are added, and it is stamped ``0001``. FROZEN: never edit these tables;
change the schema in a new revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def baseline_tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The seven tables (and their indexes) of this revision, on ``metadata`` (no schema)."""
    tz = sa.DateTime(timezone=True)
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
    sync_ledger = sa.Table(
        "sync_ledger",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("doc_type", sa.String(32), nullable=False),
        sa.Column("coupa_id", sa.BigInteger, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False, server_default=""),
        sa.Column("state", sa.String(32), nullable=False, server_default="new"),
        sa.Column("problem", sa.String(32)),
        sa.Column("legal_entity", sa.String(8)),
        sa.Column("vendor_account", sa.Text),
        sa.Column("document_number", sa.Text),
        sa.Column("d365_key", sa.Text),
        sa.Column("coupa_hash", sa.String(64)),
        sa.Column("payload_hash", sa.String(64)),
        sa.Column("coupa_updated_at", sa.String(40)),
        sa.Column("reason", sa.Text),
        sa.Column("alerted_reason", sa.Text),
        sa.Column("coupa_notified", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_run_id", sa.String(64)),
        sa.Column("claimed_by", sa.String(64)),
        sa.Column("claim_token", sa.String(32)),
        sa.Column("claimed_at", tz),
        sa.Column("claim_host", sa.String(255)),
        sa.Column("claim_pid", sa.Integer),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
        sa.UniqueConstraint("doc_type", "coupa_id", "scope", name="uq_sync_ledger_document"),
    )
    sa.Index("ix_sync_ledger_state", sync_ledger.c.doc_type, sync_ledger.c.state)
    sync_audit = sa.Table(
        "sync_audit",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", tz, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("doc_type", sa.String(32), nullable=False),
        sa.Column("coupa_id", sa.BigInteger, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False, server_default=""),
        sa.Column("action", sa.String(48), nullable=False),
        sa.Column("entity", sa.String(64)),
        sa.Column("d365_key", sa.Text),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("payload_sha256", sa.String(64)),
    )
    sa.Index("ix_sync_audit_document", sync_audit.c.doc_type, sync_audit.c.coupa_id)
    dmf_executions = sa.Table(
        "dmf_executions",
        metadata,
        sa.Column("execution_id", sa.String(128), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("doc_type", sa.String(32), nullable=False),
        sa.Column("legal_entity", sa.String(8), nullable=False),
        sa.Column("definition_group", sa.String(128), nullable=False),
        sa.Column("package_sha256", sa.String(64), nullable=False),
        sa.Column("package", sa.LargeBinary, nullable=False),
        sa.Column("entities", sa.Text, nullable=False),
        sa.Column("coupa_ids", sa.Text, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32)),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", tz, nullable=False),
        sa.Column("updated_at", tz, nullable=False),
    )
    sa.Index("ix_dmf_executions_open", dmf_executions.c.doc_type, dmf_executions.c.stage)
    invoice_status_events = sa.Table(
        "invoice_status_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("coupa_id", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("legal_entity", sa.String(8), nullable=False),
        sa.Column("invoice_number", sa.String(64), nullable=False),
        sa.Column("amount", sa.String(40), nullable=False),
        sa.Column("event_date", sa.String(40)),
        sa.Column("reference", sa.String(255)),
        sa.Column("detected_at", tz, nullable=False),
        sa.Column("detected_run_id", sa.String(64)),
        sa.Column("pushed_at", tz),
        sa.Column("pushed_run_id", sa.String(64)),
        sa.UniqueConstraint("coupa_id", "kind", "event_key", name="uq_invoice_status_event"),
    )
    return [staged_documents, snapshots, watermarks, sync_ledger, sync_audit, dmf_executions, invoice_status_events]


def upgrade() -> None:
    bind = op.get_bind()
    for table in baseline_tables(sa.MetaData()):
        table.create(bind)  # CREATE TABLE + its indexes, in the connector's schema


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(baseline_tables(sa.MetaData())):
        table.drop(bind)
