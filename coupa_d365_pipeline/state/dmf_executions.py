"""DMF package imports the connector started, recorded in the sync database *before* ``ImportFromPackage``.

One row per execution id (``coupa-d365-<run id[:8]>-<legal entity>-<n>``, traceable to the Dagster
run): the documents it carries, the package itself (ZIP bytes and the keys of its rows) and how far
it got. A run that crashed between the upload and the final status leaves a row that is not
``finished``; the next documents run of that document type resumes it — polls the status, reads the
rows back, settles the ledger — instead of importing the same documents again. No Dagster import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..common.clock import SYSTEM_CLOCK, Clock
from ..d365.dmf_package import DmfPackage, PackagedEntity
from .store import db_text, ensure_schema, metadata


class ExecutionStage(StrEnum):
    RECORDED = "recorded"  # written before ImportFromPackage: it may or may not have reached D365
    SUBMITTED = "submitted"  # ImportFromPackage answered with this id
    SETTLED = "settled"  # final status read, ledger settled
    ABANDONED = "abandoned"  # D365 never knew the id: its documents were left to the OData path


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
    sa.Column("entities", sa.Text, nullable=False),  # JSON: the PackagedEntity list (keys of every row)
    sa.Column("coupa_ids", sa.Text, nullable=False),  # JSON list
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32)),  # the last GetExecutionSummaryStatus answer
    sa.Column("detail", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_dmf_executions_open", dmf_executions.c.doc_type, dmf_executions.c.stage)


@dataclass(frozen=True)
class RecordedExecution:
    execution_id: str
    run_id: str
    doc_type: str
    legal_entity: str
    stage: ExecutionStage
    status: str | None
    coupa_ids: tuple[int, ...]
    package: DmfPackage
    created_at: datetime | None

    @classmethod
    def from_mapping(cls, m: Any) -> RecordedExecution:
        entities = tuple(PackagedEntity.model_validate(e) for e in json.loads(m["entities"]))
        package = DmfPackage(
            legal_entity=m["legal_entity"],
            definition_group=m["definition_group"],
            content=bytes(m["package"]),
            entities=entities,
        )
        return cls(
            execution_id=m["execution_id"],
            run_id=m["run_id"],
            doc_type=m["doc_type"],
            legal_entity=m["legal_entity"],
            stage=ExecutionStage(m["stage"]),
            status=m["status"],
            coupa_ids=tuple(int(i) for i in json.loads(m["coupa_ids"])),
            package=package,
            created_at=m["created_at"],
        )


class DmfExecutions:
    """The ``dmf_executions`` table."""

    def __init__(self, engine: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.engine = engine
        self.clock = clock
        ensure_schema(engine)

    def next_execution_id(self, run_id: str, legal_entity: str) -> str:
        """``coupa-d365-<run id[:8]>-<legal entity>-<n>``: n counts this run's packages for the legal entity."""
        prefix = f"coupa-d365-{run_id[:8]}-{legal_entity.lower()}-"
        c = dmf_executions.c
        with self.engine.connect() as conn:
            taken = set(conn.execute(sa.select(c.execution_id).where(c.execution_id.like(prefix + "%"))).scalars())
        n = 1
        while f"{prefix}{n}" in taken:
            n += 1
        return f"{prefix}{n}"

    def record(self, execution_id: str, run_id: str, doc_type: str, package: DmfPackage, coupa_ids: list[int]) -> None:
        now = self.clock.now()
        entities = json.dumps([e.model_dump(mode="json") for e in package.entities], default=str)
        with self.engine.begin() as conn:
            conn.execute(
                dmf_executions.insert().values(
                    execution_id=execution_id,
                    run_id=run_id,
                    doc_type=doc_type,
                    legal_entity=package.legal_entity,
                    definition_group=package.definition_group,
                    package_sha256=package.sha256,
                    package=package.content,
                    entities=entities,
                    coupa_ids=json.dumps([int(i) for i in coupa_ids]),
                    stage=ExecutionStage.RECORDED.value,
                    created_at=now,
                    updated_at=now,
                )
            )

    def mark(
        self, execution_id: str, stage: ExecutionStage, *, status: str | None = None, detail: str | None = None
    ) -> None:
        values: dict[str, Any] = {"stage": stage.value, "updated_at": self.clock.now()}
        if status is not None:
            values["status"] = status
        if detail is not None:
            values["detail"] = db_text(detail, 4000)
        with self.engine.begin() as conn:
            conn.execute(dmf_executions.update().where(dmf_executions.c.execution_id == execution_id).values(**values))

    def get(self, execution_id: str) -> RecordedExecution | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(dmf_executions).where(dmf_executions.c.execution_id == execution_id))
                .mappings()
                .first()
            )
        return RecordedExecution.from_mapping(row) if row else None

    def unfinished(self, doc_type: str) -> list[RecordedExecution]:
        """Executions of ``doc_type`` recorded or submitted but never settled, oldest first."""
        c = dmf_executions.c
        query = (
            sa.select(dmf_executions)
            .where(
                (c.doc_type == doc_type) & c.stage.in_([ExecutionStage.RECORDED.value, ExecutionStage.SUBMITTED.value])
            )
            .order_by(c.created_at, c.execution_id)
        )
        with self.engine.connect() as conn:
            return [RecordedExecution.from_mapping(r) for r in conn.execute(query).mappings()]

    def of_run(self, run_id: str) -> list[RecordedExecution]:
        c = dmf_executions.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(dmf_executions).where(c.run_id == run_id).order_by(c.created_at)).mappings()
            return [RecordedExecution.from_mapping(r) for r in rows]
