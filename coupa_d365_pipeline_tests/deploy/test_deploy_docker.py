"""deploy/docker: the Compose file, its own Dagster instance and workspace, the Dockerfile — parsed and
checked against Dagster's and Docker's own validation, without a Docker daemon."""

import re
import tomllib

import pytest
import yaml
from dagster._config import Shape, validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._serdes import ConfigurableClassData
from dagster_docker import DockerRunLauncher
from docker.models.containers import _create_container_args

from coupa_d365_pipeline_tests.deploy.files import (
    COMPOSE,
    DOCKER_INSTANCE,
    DOCKER_WORKSPACE,
    DOCKERFILE,
    ENV_EXAMPLE,
    REPO,
    ROOT_INSTANCE,
    effective_limits,
    env_file_entries,
    load_yaml,
    validated_instance_config,
    variable_name,
)

STAGING = "/var/lib/coupa-d365/webhooks"
PROJECT_SERVICES = ("user_code", "webserver", "daemon", "webhook_receiver")


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def instance() -> dict:
    return load_yaml(DOCKER_INSTANCE)


def _volumes(service: dict) -> dict[str, str]:
    """{container path: source} of a service's short-syntax volumes."""
    found = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[target] = source
    return found


def test_compose_runs_every_piece_from_the_project_image(compose):
    services = compose["services"]
    assert set(services) == {"postgres", *PROJECT_SERVICES}
    image = services["user_code"]["image"]
    for name in PROJECT_SERVICES:
        assert services[name]["image"] == image, name
        assert services[name]["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}
    assert (COMPOSE.parent / services["user_code"]["build"]["context"] / "pyproject.toml").is_file()
    # runs are launched from the image the code location reports
    assert services["user_code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == image
    assert services["webhook_receiver"]["command"][:3] == ["coupa-d365", "webhooks", "serve"]
    assert services["webhook_receiver"]["command"][3:5] == ["--host", "0.0.0.0"]
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    # published ports stay on the host's loopback: the UI has no login, the receiver wants TLS in front
    for name in ("webserver", "webhook_receiver"):
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name


def test_workspace_points_at_the_code_location_container(compose):
    workspace = load_yaml(DOCKER_WORKSPACE)
    [location] = workspace["load_from"]
    server = location["grpc_server"]
    command = compose["services"]["user_code"]["command"]
    assert server["host"] == "user_code"
    assert str(server["port"]) == command[command.index("--port") + 1]
    assert command[command.index("--module-name") + 1] == "coupa_d365_pipeline.definitions"
    assert (
        location["grpc_server"]["location_name"]
        == load_yaml(REPO / "workspace.yaml")["load_from"][0]["python_module"]["location_name"]
    )
    for name in ("webserver", "daemon"):
        service = compose["services"][name]
        assert _volumes(service)["/opt/dagster/workspace.yaml"] == "./workspace.yaml"
        assert "/opt/dagster/workspace.yaml" in service["command"]


def test_staging_directory_is_one_named_volume_for_receiver_sensor_and_runs(compose, instance):
    services = compose["services"]
    volume_name = compose["volumes"]["webhooks"]["name"]
    for name in ("webhook_receiver", "user_code"):
        assert _volumes(services[name])[STAGING] == "webhooks", name
        assert services[name]["environment"]["WEBHOOK_STAGING_DIR"] == STAGING, name
    # run containers get the same volume, by its fixed name, from DockerRunLauncher
    launcher = instance["run_launcher"]["config"]
    assert f"{volume_name}:{STAGING}" in launcher["container_kwargs"]["volumes"]
    assert "WEBHOOK_STAGING_DIR" in launcher["env_vars"]
    assert services["daemon"]["environment"]["WEBHOOK_STAGING_DIR"] == STAGING
    # and on the Compose network, also by its fixed name
    assert launcher["network"] == compose["networks"]["coupa_d365"]["name"]
    assert all(services[name]["networks"] == ["coupa_d365"] for name in services)
    # webserver and daemon never touch the staging directory
    assert STAGING not in _volumes(services["webserver"]) and STAGING not in _volumes(services["daemon"])
    # every container mounting dagster.yaml mounts this one, where DAGSTER_HOME is in the image
    dockerfile = DOCKERFILE.read_text()
    home = re.search(r"DAGSTER_HOME=(\S+)", dockerfile).group(1)
    for name in ("user_code", "webserver", "daemon"):
        assert _volumes(services[name])[f"{home}/dagster.yaml"] == "./dagster.yaml", name


def test_instance_validates_against_dagster_instance_schema(tmp_path, instance):
    validated = validated_instance_config(instance, tmp_path / "home")
    assert validated["run_launcher"]["class"] == "DockerRunLauncher"
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # the validator bites: a misspelt section is refused
    with pytest.raises(DagsterInvalidConfigError, match="run_monitorin"):
        validated_instance_config({**instance, "run_monitorin": {"enabled": True}}, tmp_path / "bad")


def test_run_launcher_config_is_valid_for_docker_run_launcher(instance):
    entry = instance["run_launcher"]
    result = validate_config(Shape(DockerRunLauncher.config_type()), entry["config"])
    assert result.success, [e.message for e in result.errors or []]
    # built the way the instance builds it (no Docker daemon is contacted until a run is launched)
    launcher = ConfigurableClassData(entry["module"], entry["class"], yaml.safe_dump(entry["config"])).rehydrate(
        as_type=DockerRunLauncher
    )
    assert launcher.networks == ["coupa_d365"]
    # the container_kwargs are ones docker's containers.create takes (its own argument check, as the
    # launcher passes them: image, command, environment, network, then container_kwargs)
    args = _create_container_args(
        {
            "image": "coupa-d365-pipeline:0.1.0",
            "command": ["dagster", "api", "execute_run"],
            "detach": True,
            "version": "1.44",  # what containers.create adds from the API client
            "environment": {"WEBHOOK_STAGING_DIR": STAGING},
            "network": launcher.networks[0],
            **launcher.container_kwargs,
        }
    )
    assert args["host_config"]["Binds"] == [f"coupa_d365_webhooks:{STAGING}"]
    bad = {**entry["config"], "container_kwarg": {}}
    assert not validate_config(Shape(DockerRunLauncher.config_type()), bad).success


@pytest.mark.usefixtures("production_pg_env")
def test_limits_and_monitoring_equal_the_root_instance(tmp_path, instance):
    root = load_yaml(ROOT_INSTANCE)
    assert effective_limits(instance, tmp_path / "docker") == effective_limits(root, tmp_path / "root")
    for section in ("run_coordinator", "concurrency", "run_monitoring", "run_retries", "telemetry"):
        assert instance[section] == root[section], section
    assert instance["storage"] == root["storage"]


def test_daemon_has_every_variable_the_launcher_passes_to_runs(compose, instance):
    """DockerRunLauncher reads each env_vars name from the daemon's environment and refuses to launch
    a run when one is unset: each must come from the daemon's environment or its env_file."""
    daemon = compose["services"]["daemon"]
    assert daemon["env_file"] == [ENV_EXAMPLE.name.removesuffix(".example")]
    available = set(env_file_entries(ENV_EXAMPLE)) | set(daemon["environment"])
    names = [variable_name(entry) for entry in instance["run_launcher"]["config"]["env_vars"]]
    assert sorted(set(names) - available) == []
    required = {"COUPA_BASE_URL", "COUPA_CLIENT_ID", "COUPA_CLIENT_SECRET", "D365_BASE_URL", "D365_TENANT_ID"}
    required |= {"D365_CLIENT_ID", "D365_CLIENT_SECRET", "D365_DEFAULT_LEGAL_ENTITY", "SYNC_DATABASE_URL"}
    required |= {f"DAGSTER_PG_{part}" for part in ("HOST", "PORT", "USER", "PASSWORD", "DB")}
    assert required <= set(names)
    # the instance's own variables are all in the daemon's environment too
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT"} <= set(daemon["environment"])


def test_sync_database_gets_its_own_database_on_the_compose_server(compose):
    init = (COMPOSE.parent / "initdb" / "10-sync-database.sql").read_text()
    assert re.search(r"^CREATE DATABASE coupa_d365_sync;$", init, re.MULTILINE)
    assert _volumes(compose["services"]["postgres"])["/docker-entrypoint-initdb.d"] == "./initdb"
    assert "@postgres:5432/coupa_d365_sync" in ENV_EXAMPLE.read_text()


def test_dockerfile_builds_the_project_with_its_launchers():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r'^RUN pip install [-a-z ]*"\.\[deploy\]"$', text, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert f"WEBHOOK_STAGING_DIR={STAGING}" in text
    # only the package is copied, never local state or .sandbox.env
    copies = re.findall(r"^COPY (.+)$", text, re.MULTILINE)
    assert copies == ["pyproject.toml README.md ./", "coupa_d365_pipeline ./coupa_d365_pipeline"]
    # the deploy extra pins the launchers to the same release as the rest of the Dagster family
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    family = {dep.split("==")[0]: dep.split("==")[1] for dep in project["dependencies"] if dep.startswith("dagster-")}
    deploy = dict(dep.split("==") for dep in project["optional-dependencies"]["deploy"])
    assert deploy == {"dagster-docker": family["dagster-postgres"], "dagster-k8s": family["dagster-postgres"]}
