"""deploy/helm: values for the official Dagster chart and the webhook receiver's manifest — checked
against the chart's value structure, Dagster's instance and launcher schemas, and the Kubernetes API
models (the kubernetes client dagster-k8s uses), without a cluster or helm."""

import copy

import kubernetes
import pytest
from dagster._config import Shape, validate_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

from coupa_d365_pipeline_tests.deploy.files import (
    HELM_VALUES,
    RECEIVER_MANIFEST,
    ROOT_INSTANCE,
    effective_limits,
    load_yaml,
    load_yaml_documents,
    render_helm_instance,
    render_k8s_run_launcher,
    validated_instance_config,
    variable_name,
)

NAMESPACE = "coupa-d365"
STAGING = "/var/lib/coupa-d365/webhooks"

# The value keys of the Dagster chart (helm/dagster/schema in dagster-io/dagster, 1.13 line) for the
# sections values.yaml sets: a key outside them is ignored by the chart, silently.
CHART_TOP_LEVEL = {
    "dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
    "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
    "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
    "telemetry", "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig",
}  # fmt: skip
CHART_POSTGRESQL = {
    "postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
    "postgresqlDatabase", "postgresqlParams", "service",
}  # fmt: skip
CHART_GLOBAL = {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
                "dagsterInstanceConfigMap"}  # fmt: skip
CHART_USER_DEPLOYMENT = {
    "name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
    "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
    "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe",
    "labels", "volumeMounts", "volumes", "schedulerName",
}  # fmt: skip
CHART_DAEMON = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
    "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "checkDbReadyInitContainer", "livenessProbe", "readinessProbe",
    "startupProbe", "annotations", "runMonitoring", "runRetries", "sensors", "schedules", "backfills",
    "schedulerName", "logFormat", "volumeMounts", "volumes", "initContainerResources", "extraContainers",
    "extraPrependedInitContainers",
}  # fmt: skip
CHART_K8S_RUN_LAUNCHER_REQUIRED = {
    "imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes",
}  # fmt: skip


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(HELM_VALUES)


@pytest.fixture(scope="module")
def code_location(values) -> dict:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return deployment


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in load_yaml_documents(RECEIVER_MANIFEST)}


def test_values_use_only_keys_the_chart_reads(values, code_location):
    assert set(values) <= CHART_TOP_LEVEL
    assert set(values["postgresql"]) <= CHART_POSTGRESQL
    assert set(values["global"]) <= CHART_GLOBAL
    assert set(values["dagsterDaemon"]) <= CHART_DAEMON
    assert set(code_location) <= CHART_USER_DEPLOYMENT
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert set(values["runLauncher"]["config"]) == {"k8sRunLauncher"}
    assert CHART_K8S_RUN_LAUNCHER_REQUIRED <= set(values["runLauncher"]["config"]["k8sRunLauncher"])


def test_external_postgresql_with_its_password_in_a_secret(values):
    pg = values["postgresql"]
    assert pg["enabled"] is False
    assert pg["postgresqlHost"]
    assert pg["postgresqlPassword"] == ""
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    assert values["rabbitmq"]["enabled"] is False and values["redis"]["enabled"] is False


def test_code_location_serves_the_definitions_module(values, code_location):
    assert values["dagster-user-deployments"]["enabled"] and values["dagster-user-deployments"]["enableSubchart"]
    args = code_location["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "coupa_d365_pipeline.definitions"
    assert code_location["image"]["tag"] not in ("", "latest")
    assert code_location["includeConfigInLaunchedRuns"]["enabled"] is True
    assert values["dagsterDaemon"]["enabled"] is True


def test_rendered_instance_validates_against_dagster_instance_schema(tmp_path, values):
    instance = render_helm_instance(values, NAMESPACE)
    validated = validated_instance_config(instance, tmp_path / "home")
    assert validated["run_launcher"]["class"] == "K8sRunLauncher"
    assert validated["run_coordinator"]["class"] == "QueuedRunCoordinator"
    # limits set both under concurrency and on the run coordinator: the chart and Dagster refuse it
    clash = copy.deepcopy(values)
    clash["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] = 6
    with pytest.raises(Exception, match="max_concurrent_runs"):
        validated_instance_config(render_helm_instance(clash, NAMESPACE), tmp_path / "clash")


def test_k8s_run_launcher_config_is_valid_for_k8s_run_launcher(values):
    config = render_k8s_run_launcher(values, NAMESPACE, "dagster")
    result = validate_config(Shape(K8sRunLauncher.config_type()), config)
    assert result.success, [e.message for e in result.errors or []]
    assert config["env_secrets"] == ["coupa-d365-credentials"]
    assert config["job_namespace"] == NAMESPACE
    typo = copy.deepcopy(values)
    typo["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpecConfig"] = "not a mapping"
    rendered = render_k8s_run_launcher(typo, NAMESPACE, "dagster")
    assert not validate_config(Shape(K8sRunLauncher.config_type()), rendered).success
    unknown = copy.deepcopy(values)
    unknown["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = []
    with pytest.raises(KeyError, match="envSecret"):
        render_k8s_run_launcher(unknown, NAMESPACE, "dagster")


def test_run_coordinator_config_is_valid_for_queued_run_coordinator(values, tmp_path):
    entry = render_helm_instance(values, NAMESPACE)["run_coordinator"]
    result = validate_config(Shape(QueuedRunCoordinator.config_type()), entry["config"])
    assert result.success, [e.message for e in result.errors or []]
    assert entry["config"] == load_yaml(ROOT_INSTANCE)["run_coordinator"]["config"]


@pytest.mark.usefixtures("production_pg_env")
def test_limits_and_monitoring_equal_the_root_instance(tmp_path, values):
    helm = effective_limits(render_helm_instance(values, NAMESPACE), tmp_path / "helm")
    assert helm == effective_limits(load_yaml(ROOT_INSTANCE), tmp_path / "root")


def _container_context(section: dict) -> K8sContainerContext:
    """A container context from K8s-style settings, as dagster-k8s builds run pods from them: each
    volume, mount and pod setting becomes a Kubernetes client model (unknown keys are refused)."""
    return K8sContainerContext(
        env_secrets=[ref["name"] for ref in section.get("envSecrets", [])],
        env_vars=section.get("envVars", []),
        volumes=section["volumes"],
        volume_mounts=section["volumeMounts"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            {"pod_spec_config": section.get("runK8sConfig", {}).get("podSpecConfig", {})}
        ),
    )


def test_runs_and_code_location_mount_the_staging_claim_and_get_the_credentials(values, code_location):
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for section in (launcher, code_location):
        context = _container_context(section)
        volumes = {v["name"]: v for v in context.run_k8s_config.pod_spec_config["volumes"]}
        mounts = {m["mount_path"]: m["name"] for m in context.run_k8s_config.container_config["volume_mounts"]}
        assert volumes[mounts[STAGING]]["persistent_volume_claim"]["claim_name"] == "coupa-d365-webhooks"
        env_from = context.run_k8s_config.container_config["env_from"]
        assert "coupa-d365-credentials" in [source["secret_ref"]["name"] for source in env_from]
    # the same variables point at the mounts, for the runs and for the code location
    run_env = dict(entry.split("=", 1) for entry in launcher["envVars"])
    assert run_env == code_location["env"]
    assert run_env["WEBHOOK_STAGING_DIR"] == STAGING
    assert [variable_name(entry) for entry in launcher["envVars"]] == list(code_location["env"])
    # run pods run as the code location's user (0700 staging directories)
    run_pod = launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]
    assert run_pod["runAsUser"] == code_location["podSecurityContext"]["runAsUser"] == 10001
    k8s_model_from_dict(
        kubernetes.client.V1PodSecurityContext,
        k8s_snake_case_dict(kubernetes.client.V1PodSecurityContext, code_location["podSecurityContext"]),
    )


def test_receiver_manifest_is_valid_kubernetes(manifest):
    models = {
        "PersistentVolumeClaim": kubernetes.client.V1PersistentVolumeClaim,
        "Deployment": kubernetes.client.V1Deployment,
        "Service": kubernetes.client.V1Service,
    }
    assert set(manifest) == set(models)
    for kind, model in models.items():
        assert isinstance(k8s_model_from_dict(model, k8s_snake_case_dict(model, manifest[kind])), model)
    broken = copy.deepcopy(manifest["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(Exception, match="volumeMount"):
        k8s_model_from_dict(models["Deployment"], k8s_snake_case_dict(models["Deployment"], broken))


def test_receiver_shares_the_claim_and_holds_only_the_webhook_secret(manifest, values, code_location):
    claim = manifest["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["name"] == "coupa-d365-webhooks"
    pod = manifest["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][:5] == ["coupa-d365", "webhooks", "serve", "--host", "0.0.0.0"]
    port = int(container["command"][container["command"].index("--port") + 1])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[STAGING]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WEBHOOK_STAGING_DIR"]["value"] == STAGING == code_location["env"]["WEBHOOK_STAGING_DIR"]
    assert env["COUPA_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "coupa-d365-webhook",
        "key": "COUPA_WEBHOOK_SECRET",
    }
    assert set(env) == {"WEBHOOK_STAGING_DIR", "COUPA_WEBHOOK_SECRET"}
    assert "envFrom" not in container and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == code_location["podSecurityContext"]["runAsUser"]
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "http"}
    service = manifest["Service"]
    assert service["spec"]["selector"] == manifest["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
