"""Across deploy/: every variable named is one the connector or Dagster reads, credentials only ever
arrive from a Secret or the git-ignored env file, and no file holds a secret value."""

import re
from pathlib import Path

import pytest

from coupa_d365_pipeline_tests.deploy.files import (
    COMPOSE,
    DEPLOY,
    DOCKER_INSTANCE,
    DOCKERFILE,
    ENV_EXAMPLE,
    HELM_VALUES,
    INTERPOLATION,
    RECEIVER_MANIFEST,
    REPO,
    SECRET_VARIABLES,
    env_file_entries,
    known_variable,
    load_yaml,
    load_yaml_documents,
    variable_name,
)

# The postgres image's own variables (filled from DAGSTER_PG_* in docker-compose.yaml), and Python's
# own in the Dockerfile: the only names outside settings.ENV_VARS and DAGSTER_* a deploy file may use.
POSTGRES_IMAGE_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
PYTHON_VARIABLES = {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
# Literal secret shapes: a Standard Webhooks secret, credentials inside a URL, a private key, a long
# base64/hex blob after a secret-ish word.
SECRET_LITERALS = [
    re.compile(r"whsec_[A-Za-z0-9+/=]{8,}"),
    re.compile(r"://[^\s:/@]+:[^\s@<>]+@"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(secret|password|token)[\"']?[ \t]*[:=][ \t]*[\"']?[A-Za-z0-9+/_\-]{16,}"),
]


def _env_references(value) -> set[str]:
    """Variable names a Dagster config value reads through ``{env: NAME}``."""
    if isinstance(value, dict):
        found = {value["env"]} if set(value) == {"env"} else set()
        return found.union(*(_env_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_env_references(v) for v in value))
    return set()


def variables_named() -> dict[str, set[str]]:
    """{file: variable names it sets, passes or reads} over every deploy/ file that names any."""
    compose = load_yaml(COMPOSE)
    compose_names = {name for name, _ in INTERPOLATION.findall(COMPOSE.read_text())}
    for service_name, service in compose["services"].items():
        if service_name != "postgres":
            compose_names |= set(service.get("environment", {}))
    instance = load_yaml(DOCKER_INSTANCE)
    values = load_yaml(HELM_VALUES)
    [code_location] = values["dagster-user-deployments"]["deployments"]
    receiver = {doc["kind"]: doc for doc in load_yaml_documents(RECEIVER_MANIFEST)}["Deployment"]
    [container] = receiver["spec"]["template"]["spec"]["containers"]
    return {
        "docker-compose.yaml": compose_names,
        "coupa-d365.env.example": set(env_file_entries(ENV_EXAMPLE)),
        "docker/dagster.yaml": {variable_name(e) for e in instance["run_launcher"]["config"]["env_vars"]}
        | _env_references(instance),
        "Dockerfile": set(re.findall(r"^\s+([A-Z][A-Z0-9_]*)=", DOCKERFILE.read_text(), re.MULTILINE))
        | set(re.findall(r"^ENV ([A-Z][A-Z0-9_]*)=", DOCKERFILE.read_text(), re.MULTILINE)),
        "helm/values.yaml": set(code_location["env"])
        | {variable_name(e) for e in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]},
        "webhook-receiver.yaml": {e["name"] for e in container["env"]},
    }


def test_every_variable_named_is_one_the_connector_or_dagster_reads():
    named = variables_named()
    assert all(named.values()), named
    named["Dockerfile"] -= PYTHON_VARIABLES
    unknown = {where: sorted(n for n in names if not known_variable(n)) for where, names in named.items()}
    assert unknown == {where: [] for where in named}
    postgres = load_yaml(COMPOSE)["services"]["postgres"]["environment"]
    assert set(postgres) == POSTGRES_IMAGE_VARIABLES


def test_the_check_catches_a_variable_nobody_reads():
    assert not known_variable("COUPA_CLIENT_SECRETS") and not known_variable("WEBHOOKS_STAGING_DIR")
    assert known_variable("D365_DMF_THRESHOLD") and known_variable("DAGSTER_PG_PASSWORD")


def test_credentials_only_come_from_secrets_or_the_env_file():
    # Compose: a credential is interpolated from coupa-d365.env, never given a default in the file
    compose_text = COMPOSE.read_text()
    for name, rest in INTERPOLATION.findall(compose_text):
        if name in SECRET_VARIABLES:
            assert rest.startswith(":?"), f"${{{name}{rest}}} must be required (:?), not defaulted"
    compose = load_yaml(COMPOSE)
    for service in compose["services"].values():
        for name, value in service.get("environment", {}).items():
            if name in SECRET_VARIABLES | {"POSTGRES_PASSWORD"}:
                assert INTERPOLATION.fullmatch(str(value)), f"{name} is a literal in docker-compose.yaml"
    entries = env_file_entries(ENV_EXAMPLE)
    assert {name: entries[name] for name in SECRET_VARIABLES} == dict.fromkeys(SECRET_VARIABLES, "")
    # the filled-in env file stays out of git
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "deploy/docker/coupa-d365.env" in ignored
    # Helm: credentials reach pods through the Secrets only, never as plain env values
    values = load_yaml(HELM_VALUES)
    [code_location] = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    plain = set(code_location["env"]) | {variable_name(e) for e in launcher["envVars"]}
    assert not plain & SECRET_VARIABLES
    assert code_location["envSecrets"] == launcher["envSecrets"] == [{"name": "coupa-d365-credentials"}]
    assert values["postgresql"]["postgresqlPassword"] == ""


def test_receiver_holds_the_webhook_secret_and_no_other_credential():
    receiver = load_yaml(COMPOSE)["services"]["webhook_receiver"]
    assert "env_file" not in receiver
    assert set(receiver["environment"]) & SECRET_VARIABLES == {"COUPA_WEBHOOK_SECRET"}
    webserver = load_yaml(COMPOSE)["services"]["webserver"]
    assert "env_file" not in webserver
    assert set(webserver["environment"]) & SECRET_VARIABLES == {"DAGSTER_PG_PASSWORD"}


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_secret_literal_in_any_deploy_file(path):
    text = path.read_text()
    hits = [m.group(0) for pattern in SECRET_LITERALS for m in pattern.finditer(text)]
    assert hits == []


@pytest.mark.parametrize(
    "planted",
    [
        "COUPA_WEBHOOK_SECRET=whsec_nh9TczgvekCfgERN+qbCOP4aK58vf5KN",
        "SYNC_DATABASE_URL=postgresql+psycopg2://dagster:hunter2@postgres:5432/coupa_d365_sync",
        "postgresqlPassword: 'Zm9vYmFyYmF6cXV4cXV1eA'",
    ],
)
def test_the_scan_finds_a_planted_secret(planted):
    assert any(pattern.search(planted) for pattern in SECRET_LITERALS)


def test_every_deploy_yaml_parses():
    parsed = [p for p in deploy_files() if p.suffix in (".yaml", ".yml")]
    assert {p.name for p in parsed} >= {"values.yaml", "webhook-receiver.yaml", "docker-compose.yaml", "dagster.yaml"}
    for path in parsed:
        assert load_yaml_documents(path), path
