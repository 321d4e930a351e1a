"""No secret (client secrets, access tokens) in logs, exception text, run config or the event log."""

import logging

import dagster as dg
import pytest

from coupa_d365_pipeline.coupa.assets import coupa_suppliers
from coupa_d365_pipeline.coupa.client import CoupaClient
from coupa_d365_pipeline.d365.assets import d365_legal_entities
from coupa_d365_pipeline.d365.client import D365Client
from coupa_d365_pipeline.definitions import build_resources
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.conftest import make_coupa_client, make_d365_client


def issued_tokens(sandboxes) -> list[str]:
    tokens = list(sandboxes.coupa._tokens)
    for attr in ("_tokens", "tokens"):
        found = getattr(sandboxes.d365, attr, None)
        if found:
            tokens += list(found)
    return tokens


def test_no_secret_in_logs_or_exceptions(sandboxes, caplog):
    env = sandboxes.env()
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        sandboxes.coupa.injector.script(ScriptedFault(kind="429", retry_after_s=0))
        sandboxes.d365.injector.script(ScriptedFault(kind="5xx", method="GET"))
        with make_coupa_client(sandboxes) as coupa, make_d365_client(sandboxes) as d365:
            list(coupa.iter_records("suppliers"))
            sandboxes.coupa.revoke_tokens()
            list(coupa.iter_records("suppliers"))
            list(d365.query("LegalEntities"))
            sandboxes.d365.revoke_tokens()
            list(d365.query("LegalEntities"))
        for client in (CoupaClient(env["COUPA_BASE_URL"], env["COUPA_CLIENT_ID"], "wrong-" + env["COUPA_CLIENT_SECRET"],
                                   token_warmup_s=0),
                       D365Client(env["D365_BASE_URL"], env["D365_TENANT_ID"], env["D365_CLIENT_ID"],
                                  "wrong-" + env["D365_CLIENT_SECRET"], authority_url=env["D365_AUTHORITY_URL"])):
            with pytest.raises(Exception) as err:
                client.ping() if isinstance(client, CoupaClient) else client.ping("usmf")
            messages += [str(err.value), repr(err.value), repr(client)]
            client.close()
    text = caplog.text + "\n".join(messages) + "\n".join(r.getMessage() for r in caplog.records)
    secrets = [env["COUPA_CLIENT_SECRET"], env["D365_CLIENT_SECRET"], *issued_tokens(sandboxes)]
    assert len(secrets) >= 4
    assert "throttled" in caplog.text  # the logs are really captured
    for secret in secrets:
        assert secret not in text


def test_no_secret_in_run_config_or_event_log(sandbox_env, sandboxes):
    with dg.instance_for_test() as instance:
        result = dg.materialize([coupa_suppliers, d365_legal_entities], resources=build_resources(),
                                instance=instance)
        run = instance.get_run_by_id(result.run_id)
        dumped = repr(run.run_config) + repr(run.tags)
        for entry in instance.all_logs(result.run_id):
            dumped += repr(entry)
    secrets = [sandbox_env["COUPA_CLIENT_SECRET"], sandbox_env["D365_CLIENT_SECRET"], *issued_tokens(sandboxes)]
    assert "minted" in dumped  # resource logs reach the event log
    for secret in secrets:
        assert secret not in dumped
