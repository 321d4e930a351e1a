"""D365 master-data assets (foundation: legal entities; vendors and invoices follow)."""


import time

import dagster as dg

from .resources import D365Resource


@dg.asset(key=["d365", "legal_entities"], group_name="d365", kinds={"d365"},
          description="D365 legal entities (dataAreaId) visible to the integration user.")
def d365_legal_entities(context: dg.AssetExecutionContext, d365: D365Resource) -> dg.MaterializeResult:
    started = time.monotonic()
    requests_before = d365.client.request_count
    rows = list(d365.client.query("LegalEntities", select=["LegalEntityId", "Name"]))
    ids = sorted(str(r["LegalEntityId"]).lower() for r in rows)
    default = d365.default_legal_entity.lower()
    table = "| dataAreaId | Name |\n|---|---|\n" + "\n".join(
        f"| {r['LegalEntityId']} | {r.get('Name', '')} |" for r in sorted(rows, key=lambda r: r["LegalEntityId"]))
    return dg.MaterializeResult(metadata={
        "legal_entities": len(rows), "default_legal_entity": default,
        "default_found": default in ids, "ids": dg.MetadataValue.json(ids),
        "table": dg.MetadataValue.md(table),
        "d365_requests": d365.client.request_count - requests_before,
        "duration_s": round(time.monotonic() - started, 3),
    })


@dg.asset_check(asset=d365_legal_entities, description="D365_DEFAULT_LEGAL_ENTITY exists in D365.")
def default_legal_entity_exists(d365: D365Resource) -> dg.AssetCheckResult:
    default = d365.default_legal_entity.lower()
    rows = list(d365.client.query("LegalEntities", select=["LegalEntityId"]))
    ids = sorted(str(r["LegalEntityId"]).lower() for r in rows)
    return dg.AssetCheckResult(
        passed=default in ids,
        description=None if default in ids else
        f"D365_DEFAULT_LEGAL_ENTITY={default!r} is not a legal entity in D365; known: {', '.join(ids)}",
        metadata={"default_legal_entity": default, "known": dg.MetadataValue.json(ids)})
