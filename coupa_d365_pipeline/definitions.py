"""The code location: ``defs`` (loaded by workspace.yaml, ``dagster dev`` and the CLI)."""

from __future__ import annotations

import dagster as dg

from .defs.coupa_staging import coupa_invoices, coupa_purchase_orders, coupa_suppliers
from .defs.legal_entities import d365_legal_entities, default_legal_entity_exists
from .defs.master_data import d365_gl_mapping, d365_master_data, gl_mapping_matches_d365
from .defs.invoice_status import coupa_invoice_status, d365_invoice_status, invoice_status_delivered
from .defs.documents import (
    d365_purchase_orders, d365_vendor_invoices, d365_vendors, purchase_orders_not_stuck, replay_invoices_job,
    vendor_invoices_not_stuck, vendors_not_stuck,
)
from .defs.schedules import build_schedules
from .defs.resources import CoupaResource, D365Resource, MappingResource, SyncStateResource


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Required values come from EnvVar (resolved at run start, shown by name in the UI); optional
    ones (scopes, API version, authority, rate, database, mapping file) are read from the environment
    by the resources when a run starts — nothing is read from the environment at import time."""
    return {
        "coupa": CoupaResource(
            base_url=dg.EnvVar("COUPA_BASE_URL"),
            client_id=dg.EnvVar("COUPA_CLIENT_ID"),
            client_secret=dg.EnvVar("COUPA_CLIENT_SECRET"),
        ),
        "d365": D365Resource(
            base_url=dg.EnvVar("D365_BASE_URL"),
            tenant_id=dg.EnvVar("D365_TENANT_ID"),
            client_id=dg.EnvVar("D365_CLIENT_ID"),
            client_secret=dg.EnvVar("D365_CLIENT_SECRET"),
            default_legal_entity=dg.EnvVar("D365_DEFAULT_LEGAL_ENTITY"),
        ),
        "sync_state": SyncStateResource(),
        "mapping": MappingResource(),
    }


daily_documents_job = dg.define_asset_job(
    "daily_documents_job",
    selection=dg.AssetSelection.assets(coupa_invoices, coupa_purchase_orders, d365_purchase_orders,
                                       d365_vendor_invoices),
    description="One day (or a range, as one run) of Coupa POs and invoices: stage, then write POs, then invoices.")

master_data_job = dg.define_asset_job(
    "master_data_job",
    selection=dg.AssetSelection.assets(coupa_suppliers, d365_legal_entities, d365_master_data, d365_gl_mapping,
                                       d365_vendors),
    description="Suppliers, D365 master data, the validated mapping, and vendors in D365.")

# One status run at a time: dagster.yaml limits runs tagged STATUS_RUN_TAG to 1 (QueuedRunCoordinator).
# Correctness does not depend on it — the writer claims each invoice's ledger row — but two status
# runs would only fight over the same invoices.
STATUS_RUN_TAG = {"coupa_d365/flow": "invoice_status"}

invoice_status_job = dg.define_asset_job(
    "invoice_status_job", selection=dg.AssetSelection.assets(d365_invoice_status, coupa_invoice_status),
    run_tags=STATUS_RUN_TAG,
    description="Posted-invoice and payment status from D365 back to Coupa (one run at a time).")

defs = dg.Definitions(
    assets=[coupa_suppliers, coupa_invoices, coupa_purchase_orders, d365_legal_entities, d365_master_data,
            d365_gl_mapping, d365_vendors, d365_purchase_orders, d365_vendor_invoices, d365_invoice_status,
            coupa_invoice_status],
    asset_checks=[default_legal_entity_exists, gl_mapping_matches_d365, vendors_not_stuck, purchase_orders_not_stuck,
                  vendor_invoices_not_stuck, invoice_status_delivered],
    jobs=[daily_documents_job, master_data_job, invoice_status_job, replay_invoices_job],
    schedules=build_schedules(daily_documents_job, master_data_job, invoice_status_job),
    resources=build_resources(),
)
