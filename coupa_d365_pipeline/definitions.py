"""The code location: ``defs`` (loaded by workspace.yaml, ``dagster dev`` and the CLI)."""

from __future__ import annotations

import os

import dagster as dg

from .coupa.assets import coupa_invoices, coupa_purchase_orders, coupa_suppliers
from .d365.assets import d365_legal_entities, default_legal_entity_exists
from .resources import CoupaResource, D365Resource, SyncStateResource
from .settings import (
    DEFAULT_COUPA_API_VERSION, DEFAULT_COUPA_SCOPES, DEFAULT_D365_AUTHORITY_URL, DEFAULT_SYNC_DATABASE_URL,
)


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """Secrets and endpoints come from EnvVar (resolved at run start, shown by name in the UI)."""
    return {
        "coupa": CoupaResource(
            base_url=dg.EnvVar("COUPA_BASE_URL"),
            client_id=dg.EnvVar("COUPA_CLIENT_ID"),
            client_secret=dg.EnvVar("COUPA_CLIENT_SECRET"),
            scopes=os.environ.get("COUPA_SCOPES", DEFAULT_COUPA_SCOPES),
            api_version=os.environ.get("COUPA_API_VERSION", DEFAULT_COUPA_API_VERSION),
            token_warmup_s=float(os.environ.get("COUPA_TOKEN_WARMUP_SECONDS", "5")),
        ),
        "d365": D365Resource(
            base_url=dg.EnvVar("D365_BASE_URL"),
            tenant_id=dg.EnvVar("D365_TENANT_ID"),
            client_id=dg.EnvVar("D365_CLIENT_ID"),
            client_secret=dg.EnvVar("D365_CLIENT_SECRET"),
            authority_url=os.environ.get("D365_AUTHORITY_URL", DEFAULT_D365_AUTHORITY_URL),
            default_legal_entity=dg.EnvVar("D365_DEFAULT_LEGAL_ENTITY"),
        ),
        "sync_state": SyncStateResource(database_url=os.environ.get("SYNC_DATABASE_URL", DEFAULT_SYNC_DATABASE_URL)),
    }


daily_documents_job = dg.define_asset_job(
    "daily_documents_job", selection=dg.AssetSelection.assets(coupa_invoices, coupa_purchase_orders),
    description="Stage one day of Coupa invoices and purchase orders.")

master_data_job = dg.define_asset_job(
    "master_data_job", selection=dg.AssetSelection.assets(coupa_suppliers, d365_legal_entities),
    description="Refresh suppliers and D365 legal entities.")

defs = dg.Definitions(
    assets=[coupa_suppliers, coupa_invoices, coupa_purchase_orders, d365_legal_entities],
    asset_checks=[default_legal_entity_exists],
    jobs=[daily_documents_job, master_data_job],
    resources=build_resources(),
)
