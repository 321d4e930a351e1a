"""Everything one sync run needs, passed explicitly (no globals, no Dagster)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..coupa.client import CoupaClient
from ..d365.client import D365Client
from ..mapping.config import MappingConfig
from ..mapping.master import D365MasterData
from ..state.ledger import Ledger
from ..state.store import SyncStore
from .notify import CoupaNotifier


@dataclass
class SyncServices:
    coupa: CoupaClient
    d365: D365Client
    store: SyncStore
    ledger: Ledger
    mapping: MappingConfig
    master: D365MasterData
    run_id: str
    logger: logging.Logger | logging.LoggerAdapter = field(
        default_factory=lambda: logging.getLogger("coupa_d365_pipeline.sync")
    )
    notifier: CoupaNotifier = None  # type: ignore[assignment]  # built from coupa + logger when not given

    def __post_init__(self) -> None:
        if self.notifier is None:
            self.notifier = CoupaNotifier(self.coupa, logger=self.logger)

    def supplier(self, supplier_id: int) -> dict[str, Any] | None:
        """The staged Coupa supplier, fetched (and staged) from Coupa when not staged yet."""
        found = self.store.documents_by_id("supplier", [supplier_id]).get(int(supplier_id))
        if found is None:
            found = self.coupa.get("suppliers", supplier_id)
            self.store.stage("supplier", [found], run_id=self.run_id)
        return found


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def http_status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None) or getattr(exc, "last_status", None)


Sleep = Callable[[float], None]
