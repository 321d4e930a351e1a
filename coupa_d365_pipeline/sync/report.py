"""Outcomes of syncing documents, summarised for materialization metadata."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# error types (``sync.context.error_text`` prefixes) of a system that failed to answer: not a document's fault
SYSTEM_FAILURES = ("RetriesExhaustedError", "UnexpectedAnswerError", "UnexpectedWriteAnswerError")

# action -> counts as a "problem" row in the metadata table
PROBLEM_ACTIONS = frozenset({"quarantined", "failed", "void_blocked_posted", "changed_after_post", "change_blocked",
                             "busy"})


@dataclass(frozen=True)
class Outcome:
    doc_type: str
    coupa_id: int
    action: str                 # created | updated | already_present | repaired | quarantined | failed | voided
                                # | void_blocked_posted | changed_after_post | busy | skipped
    document: str = ""          # human identifier (invoice number, supplier name)
    legal_entity: str | None = None
    detail: str = ""


@dataclass
class SyncReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        return outcome

    def counts(self, doc_type: str | None = None) -> Counter:
        return Counter(o.action for o in self.outcomes if doc_type is None or o.doc_type == doc_type)

    def problems(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.action in PROBLEM_ACTIONS]

    def all_failed_by_system(self, doc_type: str) -> str | None:
        """When every document of ``doc_type`` failed because a system failed to answer (the same error
        type each time), that is an outage, not bad documents: a one-line reason; else None."""
        mine = [o for o in self.outcomes if o.doc_type == doc_type]
        kinds = {o.detail.split(":", 1)[0] for o in mine}
        if not mine or any(o.action != "failed" for o in mine) or len(kinds) != 1 or not kinds <= set(SYSTEM_FAILURES):
            return None
        last = mine[-1].detail.splitlines()[0] if mine[-1].detail else ""
        return (f"all {len(mine)} {doc_type} documents of this run failed with {kinds.pop()}; a system is not answering "
                f"usably, the documents are retried by the next run. The last: {last}")

    def problems_markdown(self, limit: int = 200) -> str:
        rows = self.problems()
        if not rows:
            return "No problems."
        lines = ["| Coupa id | document | legal entity | state | reason |", "|---|---|---|---|---|"]
        for o in rows[:limit]:
            detail = o.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {o.coupa_id} | {o.document.replace('|', '/')} | {o.legal_entity or ''} | {o.action} | {detail} |")
        if len(rows) > limit:
            lines.append(f"| … | {len(rows) - limit} more | | | |")
        return "\n".join(lines)

    def metadata_counts(self, doc_type: str) -> dict[str, Any]:
        counts = self.counts(doc_type)
        return {name: int(counts.get(name, 0)) for name in (
            "created", "updated", "already_present", "repaired", "quarantined", "failed", "voided",
            "void_blocked_posted", "changed_after_post", "cancelled", "closed", "change_blocked", "busy", "skipped")}
