"""The code location (workspace.yaml, ``[tool.dagster]``, ``dagster ... -m coupa_d365_pipeline.definitions``):
the flows in ``defs/`` merged into one ``defs``. Each flow module owns its assets, checks, job and
schedules; this module lists nothing itself. Keep exactly one ``Definitions`` at module scope here
(Dagster's loader rejects two), so the flows are imported as modules."""

from __future__ import annotations

import dagster as dg

from .defs import documents, invoice_status, master_data, reconciliation, replay, resources, webhooks

defs = dg.Definitions.merge(
    resources.defs,
    master_data.defs,
    documents.defs,
    invoice_status.defs,
    replay.defs,
    webhooks.defs,
    reconciliation.defs,
)
