"""No secret (client secrets, access tokens) in logs, exception text, run config or the event log.

Every token the sandboxes ever issue is recorded as it is issued — revoked and expired ones too — so
the search covers exactly the tokens that existed, and the expected counts are pinned."""

import logging
from datetime import UTC, datetime

import dagster as dg
import pytest

from coupa_d365_pipeline.common.credentials import (
    FILE_ENV_VAR,
    KEY_FILE_ENV_VAR,
    STORED_NAMES,
    create_key_file,
    generate_key,
    read_key_file,
    update_store,
)
from coupa_d365_pipeline.coupa.client import CoupaClient
from coupa_d365_pipeline.d365.client import D365Client
from coupa_d365_pipeline.defs.master_data import coupa_suppliers, d365_legal_entities
from coupa_d365_pipeline.defs.resources import build_resources
from coupa_d365_pipeline.sandbox.faults import ScriptedFault
from coupa_d365_pipeline_tests.conftest import make_coupa_client, make_d365_client


@pytest.fixture
def issued_tokens(sandboxes, monkeypatch) -> dict[str, list[str]]:
    """{"coupa": [...], "d365": [...]}: every access token each sandbox issues, in order."""
    issued: dict[str, list[str]] = {"coupa": [], "d365": []}
    for name in issued:
        sandbox = getattr(sandboxes, name)

        def recording_issue_token(*args, _real=sandbox.issue_token, _issued=issued[name]):
            result = _real(*args)
            _issued.append(result[0])
            return result

        monkeypatch.setattr(sandbox, "issue_token", recording_issue_token)
    return issued


def bearer_tokens_used(sandbox) -> set[str]:
    return {
        e.headers["authorization"].removeprefix("Bearer ")
        for e in sandbox.log.snapshot()
        if e.headers.get("authorization", "").startswith("Bearer ")
    }


def test_no_secret_in_logs_or_exceptions(sandboxes, issued_tokens, caplog):
    env = sandboxes.env()
    messages: list[str] = []
    wrong_secrets = ["wrong-" + env["COUPA_CLIENT_SECRET"], "wrong-" + env["D365_CLIENT_SECRET"]]
    with caplog.at_level(logging.DEBUG):
        sandboxes.coupa.injector.script(ScriptedFault(kind="429", retry_after_s=0))
        sandboxes.d365.injector.script(ScriptedFault(kind="5xx", method="GET"))
        with (
            make_coupa_client(sandboxes, sleep=lambda s: None) as coupa,
            make_d365_client(sandboxes, sleep=lambda s: None) as d365,
        ):
            list(coupa.iter_records("suppliers"))
            sandboxes.coupa.revoke_tokens()
            list(coupa.iter_records("suppliers"))  # 401 with the first token, then a second one
            list(d365.query("LegalEntities"))
            sandboxes.d365.revoke_tokens()
            list(d365.query("LegalEntities"))
            assert (coupa.tokens_minted, d365.auth.tokens_minted) == (2, 2)
        for client in (
            CoupaClient(env["COUPA_BASE_URL"], env["COUPA_CLIENT_ID"], wrong_secrets[0], token_warmup_s=0),
            D365Client(
                env["D365_BASE_URL"],
                env["D365_TENANT_ID"],
                env["D365_CLIENT_ID"],
                wrong_secrets[1],
                authority_url=env["D365_AUTHORITY_URL"],
            ),
        ):
            with pytest.raises(Exception) as err:
                client.ping() if isinstance(client, CoupaClient) else client.ping("usmf")
            messages += [str(err.value), repr(err.value), repr(client)]
            client.close()
    # the faults fired, and the revoked tokens really were refused: they are part of the search
    assert [e.injected for e in sandboxes.coupa.log.snapshot() if e.injected] == ["429"]
    assert [e.injected for e in sandboxes.d365.log.snapshot() if e.injected] == ["5xx"]
    assert len(issued_tokens["coupa"]) == 2 and len(issued_tokens["d365"]) == 2
    refused = {
        e.headers["authorization"].removeprefix("Bearer ")
        for sandbox in (sandboxes.coupa, sandboxes.d365)
        for e in sandbox.log.snapshot()
        if e.status == 401 and "authorization" in e.headers
    }
    assert refused == {issued_tokens["coupa"][0], issued_tokens["d365"][0]}
    assert bearer_tokens_used(sandboxes.coupa) == set(issued_tokens["coupa"])
    assert bearer_tokens_used(sandboxes.d365) == set(issued_tokens["d365"])

    text = caplog.text + "\n".join(messages) + "\n".join(r.getMessage() for r in caplog.records)
    secrets = [
        env["COUPA_CLIENT_SECRET"],
        env["D365_CLIENT_SECRET"],
        *wrong_secrets,
        *issued_tokens["coupa"],
        *issued_tokens["d365"],
    ]
    assert len(set(secrets)) == 8
    assert "throttled" in caplog.text and "renewing the token" in caplog.text  # the logs are really captured
    assert "invalid_client" in "\n".join(messages)  # and so are the failures
    for secret in secrets:
        assert secret not in text


@pytest.mark.parametrize("source", ["environment", "credential store"])
def test_no_secret_in_run_config_or_event_log(sandbox_env, sandboxes, issued_tokens, source, tmp_path, monkeypatch):
    if source == "credential store":  # the resources read every credential from the encrypted store
        key_file = tmp_path / "credentials.key"
        store_file = tmp_path / "credentials.enc"
        create_key_file(key_file, generate_key())
        stored = {name: sandbox_env[name] for name in STORED_NAMES if name in sandbox_env}
        assert len(stored) == 5  # both client ids and secrets, the tenant
        update_store(store_file, read_key_file(key_file), datetime(2026, 11, 20, tzinfo=UTC), put=stored)
        for name in stored:
            monkeypatch.delenv(name)
        monkeypatch.setenv(FILE_ENV_VAR, str(store_file))
        monkeypatch.setenv(KEY_FILE_ENV_VAR, str(key_file))
    with dg.instance_for_test() as instance:
        result = dg.materialize([coupa_suppliers, d365_legal_entities], resources=build_resources(), instance=instance)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        dumped = repr(run.run_config) + repr(run.tags)
        for entry in instance.all_logs(result.run_id):
            dumped += repr(entry)
    assert len(issued_tokens["coupa"]) == 1 and len(issued_tokens["d365"]) == 1  # one client per system
    assert bearer_tokens_used(sandboxes.coupa) == set(issued_tokens["coupa"])
    assert bearer_tokens_used(sandboxes.d365) == set(issued_tokens["d365"])
    secrets = [
        sandbox_env["COUPA_CLIENT_SECRET"],
        sandbox_env["D365_CLIENT_SECRET"],
        *issued_tokens["coupa"],
        *issued_tokens["d365"],
    ]
    assert "minted" in dumped  # resource logs reach the event log
    for secret in secrets:
        assert secret not in dumped
