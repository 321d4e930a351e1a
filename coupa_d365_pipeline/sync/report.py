"""Outcomes of syncing documents, summarised for materialization metadata.

The outcome vocabulary is :class:`Action` (a ``StrEnum``: each member *is* its string, so metadata
keys, ledger audit rows and tests read the same words as before)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..common.markdown import table

# error types (``sync.context.error_text`` prefixes) of a system that failed to answer: not a document's fault
SYSTEM_FAILURES = ("RetriesExhaustedError", "UnexpectedAnswerError", "UnexpectedWriteAnswerError")


class Action(StrEnum):
    """What syncing one document did (or why it did nothing). Declaration order is the order of the
    counts in the materialization metadata."""

    CREATED = "created"
    UPDATED = "updated"
    ALREADY_PRESENT = "already_present"
    REPAIRED = "repaired"  # adopted a half-written / hand-keyed D365 record and completed it
    QUARANTINED = "quarantined"
    FAILED = "failed"
    VOIDED = "voided"
    VOID_BLOCKED = "void_blocked_posted"
    CHANGED_AFTER_POST = "changed_after_post"
    CANCELLED = "cancelled"
    CLOSED = "closed"
    CHANGE_BLOCKED = "change_blocked"
    BUSY = "busy"  # another run holds the document; it is retried
    SKIPPED = "skipped"
    MISSING_IN_D365 = "missing_in_d365"  # booked, then gone from D365 (not counted in the metadata)

    @property
    def is_problem(self) -> bool:
        """Shown in the problems table of the metadata."""
        return self in PROBLEM_ACTIONS

    @property
    def needs_vendor_attention(self) -> bool:
        """A vendor in this state keeps a document that needs it from being booked."""
        return self in (Action.QUARANTINED, Action.FAILED, Action.BUSY)


PROBLEM_ACTIONS = frozenset(
    {
        Action.QUARANTINED,
        Action.FAILED,
        Action.VOID_BLOCKED,
        Action.CHANGED_AFTER_POST,
        Action.CHANGE_BLOCKED,
        Action.BUSY,
    }
)
# the counts every document asset reports (missing_in_d365 is reported by the *_not_stuck checks instead)
COUNTED_ACTIONS = tuple(a for a in Action if a is not Action.MISSING_IN_D365)


@dataclass(frozen=True)
class Outcome:
    doc_type: str
    coupa_id: int
    action: Action
    document: str = ""  # human identifier (invoice number, supplier name)
    legal_entity: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action(self.action))  # a ledger DocState or a plain word is accepted


@dataclass
class SyncReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        return outcome

    def counts(self, doc_type: str | None = None) -> Counter:
        return Counter(o.action for o in self.outcomes if doc_type is None or o.doc_type == doc_type)

    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action.is_problem]

    def all_failed_by_system(self, doc_type: str) -> str | None:
        """When every document of ``doc_type`` failed because a system failed to answer (the same error
        type each time), that is an outage, not bad documents: a one-line reason; else None."""
        mine = [o for o in self.outcomes if o.doc_type == doc_type]
        kinds = {o.detail.split(":", 1)[0] for o in mine}
        if (
            not mine
            or any(o.action != Action.FAILED for o in mine)
            or len(kinds) != 1
            or not kinds <= set(SYSTEM_FAILURES)
        ):
            return None
        last = mine[-1].detail.splitlines()[0] if mine[-1].detail else ""
        return (
            f"all {len(mine)} {doc_type} documents of this run failed with {kinds.pop()}; a system is not answering "
            f"usably, the documents are retried by the next run. The last: {last}"
        )

    def problems_markdown(self, limit: int = 200) -> str:
        return table(
            ("Coupa id", "document", "legal entity", "state", "reason"),
            ((o.coupa_id, o.document, o.legal_entity, o.action.value, o.detail) for o in self.problems()),
            limit=limit,
            empty="No problems.",
        )

    def metadata_counts(self, doc_type: str) -> dict[str, Any]:
        counts = self.counts(doc_type)
        return {action.value: int(counts.get(action, 0)) for action in COUNTED_ACTIONS}
