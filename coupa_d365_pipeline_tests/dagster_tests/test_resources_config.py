"""One configuration path: the Dagster resources validate and default exactly like the CLI settings
(the same loader), with a resource's explicit config laid over the environment."""

import pytest

from coupa_d365_pipeline.defs.resources import CoupaResource, D365Resource, MappingResource, SyncStateResource
from coupa_d365_pipeline.settings import (
    DEFAULT_COUPA_TIMEOUT_S,
    DEFAULT_D365_TIMEOUT_S,
    DEFAULT_SYNC_DATABASE_URL,
    ConfigError,
    load_coupa_settings,
    load_d365_settings,
)

COUPA = {"COUPA_BASE_URL": "https://acme.coupahost.com/", "COUPA_CLIENT_ID": "cid", "COUPA_CLIENT_SECRET": "s3cret"}
D365 = {
    "D365_BASE_URL": "https://Contoso.Operations.Dynamics.com",
    "D365_TENANT_ID": "tenant",
    "D365_CLIENT_ID": "app",
    "D365_CLIENT_SECRET": "d365-s3cret",
    "D365_DEFAULT_LEGAL_ENTITY": "USMF",
}
OPTIONAL = [
    *COUPA,
    *D365,
    "COUPA_SCOPES",
    "COUPA_API_VERSION",
    "COUPA_MAX_REQUESTS_PER_SECOND",
    "COUPA_TOKEN_WARMUP_SECONDS",
    "D365_AUTHORITY_URL",
    "SYNC_DATABASE_URL",
    "COUPA_D365_MAPPING_FILE",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in OPTIONAL:
        monkeypatch.delenv(name, raising=False)


def _coupa(**config) -> CoupaResource:
    return CoupaResource(base_url=COUPA["COUPA_BASE_URL"], client_id="cid", client_secret="s3cret", **config)


def _d365(**config) -> D365Resource:
    return D365Resource(
        base_url=D365["D365_BASE_URL"],
        tenant_id="tenant",
        client_id="app",
        client_secret="d365-s3cret",
        default_legal_entity=config.pop("le", "USMF"),
        **config,
    )


def test_the_resources_give_the_settings_the_cli_gives(monkeypatch):
    monkeypatch.setenv("COUPA_SCOPES", "core.invoice.read, core.supplier.read")
    monkeypatch.setenv("COUPA_MAX_REQUESTS_PER_SECOND", "12.5")
    env = {**COUPA, "COUPA_SCOPES": "core.invoice.read, core.supplier.read", "COUPA_MAX_REQUESTS_PER_SECOND": "12.5"}
    assert _coupa().client_settings() == load_coupa_settings(env, [])
    assert _d365().client_settings() == load_d365_settings(D365, [])
    assert _coupa().client_settings().timeout_s == DEFAULT_COUPA_TIMEOUT_S
    assert _d365().client_settings().timeout_s == DEFAULT_D365_TIMEOUT_S
    assert SyncStateResource().resolved_url == DEFAULT_SYNC_DATABASE_URL
    assert MappingResource().resolved_path is None


def test_explicit_resource_config_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("COUPA_API_VERSION", "R40")
    monkeypatch.setenv("SYNC_DATABASE_URL", "sqlite:///from-env.db")
    assert _coupa().client_settings().api_version == "R40"
    assert _coupa(api_version="R41", timeout_s=5.0).client_settings().api_version == "R41"
    assert _coupa(timeout_s=5.0).client_settings().timeout_s == 5.0
    assert SyncStateResource().resolved_url == "sqlite:///from-env.db"
    assert SyncStateResource(database_url="sqlite:///explicit.db").resolved_url == "sqlite:///explicit.db"


@pytest.mark.parametrize(
    "resource, name",
    [
        (lambda: _d365(le="us-mf"), "D365_DEFAULT_LEGAL_ENTITY"),
        (lambda: _d365(authority_url="login"), "D365_AUTHORITY_URL"),
        (lambda: CoupaResource(base_url="acme", client_id="cid", client_secret="s3cret"), "COUPA_BASE_URL"),
        (
            lambda: CoupaResource(base_url=COUPA["COUPA_BASE_URL"], client_id="cid", client_secret=""),
            "COUPA_CLIENT_SECRET",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(resource, name):
    with pytest.raises(ConfigError) as err:
        resource().make_client()
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"invalid configuration: {name}"), text
    assert "s3cret" not in text


def test_defaults_still_spelled_outside_settings_agree_with_it():
    """Client keyword defaults and the status overlap are still literals in their modules (outside this
    change); until they import them from settings, they must at least agree with it."""
    import inspect
    from datetime import timedelta

    from coupa_d365_pipeline import settings
    from coupa_d365_pipeline.coupa.client import CoupaClient
    from coupa_d365_pipeline.d365.client import D365Client
    from coupa_d365_pipeline.sync import status

    coupa = inspect.signature(CoupaClient).parameters
    d365 = inspect.signature(D365Client).parameters
    assert coupa["timeout_s"].default == settings.DEFAULT_COUPA_TIMEOUT_S
    assert coupa["max_requests_per_second"].default == settings.DEFAULT_COUPA_MAX_REQUESTS_PER_SECOND
    assert coupa["token_warmup_s"].default == settings.DEFAULT_COUPA_TOKEN_WARMUP_SECONDS
    assert d365["timeout_s"].default == settings.DEFAULT_D365_TIMEOUT_S
    assert d365["authority_url"].default == settings.DEFAULT_D365_AUTHORITY_URL
    assert status.DEFAULT_READ_OVERLAP == timedelta(minutes=settings.DEFAULT_STATUS_READ_OVERLAP_MINUTES)


def test_credentials_left_unset_come_from_the_store_and_explicit_config_or_the_environment_wins(tmp_path, monkeypatch):
    from datetime import UTC, datetime

    from coupa_d365_pipeline.common import credentials

    key_file = tmp_path / "credentials.key"
    credentials.create_key_file(key_file, credentials.generate_key())
    stored = {
        "COUPA_CLIENT_ID": "stored-cid",
        "COUPA_CLIENT_SECRET": "stored-coupa-s3cret",
        "D365_TENANT_ID": "stored-tenant",
        "D365_CLIENT_ID": "stored-app",
        "D365_CLIENT_SECRET": "stored-d365-s3cret",
    }
    credentials.update_store(
        tmp_path / "credentials.enc",
        credentials.read_key_file(key_file),
        datetime(2026, 11, 20, tzinfo=UTC),
        put=stored,
    )
    monkeypatch.setenv(credentials.FILE_ENV_VAR, str(tmp_path / "credentials.enc"))
    monkeypatch.setenv(credentials.KEY_FILE_ENV_VAR, str(key_file))
    coupa = CoupaResource(base_url=COUPA["COUPA_BASE_URL"]).client_settings()
    d365 = D365Resource(base_url=D365["D365_BASE_URL"], default_legal_entity="usmf").client_settings()
    assert (coupa.client_id, coupa.client_secret.get_secret_value()) == ("stored-cid", "stored-coupa-s3cret")
    assert (d365.tenant_id, d365.client_id, d365.client_secret.get_secret_value()) == (
        "stored-tenant",
        "stored-app",
        "stored-d365-s3cret",
    )
    assert _coupa().client_settings().client_secret.get_secret_value() == "s3cret"  # explicit config wins
    monkeypatch.setenv("D365_CLIENT_SECRET", "env-d365-s3cret")  # and so does the environment
    d365 = D365Resource(base_url=D365["D365_BASE_URL"], default_legal_entity="usmf").client_settings()
    assert (d365.client_id, d365.client_secret.get_secret_value()) == ("stored-app", "env-d365-s3cret")
