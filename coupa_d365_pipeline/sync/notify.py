"""What Coupa is told: export flag, integration history (success) and alerts (failure). Never GL data."""

from __future__ import annotations

import logging
from typing import Any

from ..common.http import SystemUnavailableError
from ..coupa.client import CoupaClient, CoupaError

DOCUMENT_TYPES = {"invoice": "InvoiceHeader", "purchase_order": "OrderHeader"}
RESOURCES = {"invoice": "invoices", "purchase_order": "purchase_orders"}


class CoupaNotifier:
    def __init__(
        self,
        coupa: CoupaClient,
        integration_code: str = "D365-FO",
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.coupa = coupa
        self.integration_code = integration_code
        self.logger = logger or logging.getLogger("coupa_d365_pipeline.sync")

    def _record(
        self, doc_type: str, coupa_id: int, status: str, code: str, message: str, document_status: str | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "document-type": DOCUMENT_TYPES[doc_type],
            "document-id": int(coupa_id),
            "status": status,
            "contact-alert-type": "Functional",
            "integration": {"code": self.integration_code},
            "responses": [{"response-code": code, "response-message": message[:1000]}],
        }
        if document_status:
            record["document-status"] = document_status
        return record

    def success(
        self,
        doc_type: str,
        coupa_id: int,
        message: str,
        *,
        code: str = "D365-BOOKED",
        document_status: str | None = None,
        mark_exported: bool = True,
        may_exist: bool = True,
    ) -> None:
        """Mark exported (own request, idempotent) and add one Success history record. When an earlier
        attempt may have created it (``may_exist``), read Coupa first so a re-run adds no second one."""
        if mark_exported:
            self.coupa.mark_exported(RESOURCES[doc_type], coupa_id)
        if may_exist:
            existing = list(
                self.coupa.iter_records(
                    "integration_history_records",
                    {"document-type": DOCUMENT_TYPES[doc_type], "document-id": int(coupa_id), "status": "Success"},
                )
            )
            if any(
                any(r.get("response-message") == message[:1000] for r in (e.get("responses") or [])) for e in existing
            ):
                return
        self.coupa.create_integration_history_record(
            self._record(doc_type, coupa_id, "Success", code, message, document_status)
        )

    def alert(
        self,
        doc_type: str,
        coupa_id: int,
        reason: str,
        *,
        code: str = "D365-NOT-BOOKED",
        document_status: str | None = None,
    ) -> bool:
        try:
            self.coupa.create_integration_history_record(
                self._record(doc_type, coupa_id, "Error", code, reason, document_status), alert=True
            )
            return True
        except SystemUnavailableError:  # Coupa down or refusing our credentials: the run stops
            raise
        except CoupaError as exc:  # an alert that cannot be sent must not stop the sync
            self.logger.warning("could not create a Coupa alert for %s %s: %s", doc_type, coupa_id, exc)
            return False
