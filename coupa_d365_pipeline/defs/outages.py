"""Dagster glue: a system that is down or refuses our credentials fails the step (and so the run)
with one clear message, instead of a green run that wrote nothing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from ..common.http import is_system_failure
from ..sync.report import SyncReport

F = TypeVar("F", bound=Callable[..., Any])


def outage_failure(message: str, report: SyncReport | None = None) -> dg.Failure:
    metadata: dict[str, Any] = {}
    if report is not None:
        metadata = {
            "done_before_the_stop": dg.MetadataValue.json(dict(report.counts())),
            "problems": dg.MetadataValue.md(report.problems_markdown()),
        }
    return dg.Failure(description=message, metadata=metadata, allow_retries=True)


def fail_run_on_outage(fn: F) -> F:
    """Decorate an asset/op body (under ``@dg.asset``): a system failure (``SystemUnavailableError``,
    an unreadable answer, retries exhausted) -> ``dg.Failure`` with its one-line message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            # what reaches the step is never one document's trouble (the sync core isolates those):
            # a system that is down, refuses us, or answers with something that is not its API
            if not is_system_failure(exc):
                raise
            raise outage_failure(str(exc), getattr(exc, "report", None)) from None

    return wrapper  # type: ignore[return-value]


def fail_if_all_failed_by_system(report: SyncReport, doc_type: str) -> None:
    reason = report.all_failed_by_system(doc_type)
    if reason is not None:
        raise outage_failure(reason, report)
