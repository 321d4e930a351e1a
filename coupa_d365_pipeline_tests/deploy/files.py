"""What the deploy/ tests share: the files, the Helm values rendered into the instance config the chart
writes, the settings Dagster itself derives from an instance config, and the variable names.

``render_helm_instance`` mirrors the Dagster chart's instance templates (``templates/configmap-instance.yaml``
and ``templates/helpers/instance/*.tpl`` of helm/dagster, 1.13 line) for the sections deploy/helm/values.yaml
sets. It knows each values key it translates and raises on any other, so a key added to values.yaml
must be added here with the name the chart renders it under."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dagster._core.instance.config import ConcurrencyConfig, dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._serdes import ConfigurableClassData

from coupa_d365_pipeline.settings import ENV_VARS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
RECEIVER_MANIFEST = DEPLOY / "helm" / "webhook-receiver.yaml"
COMPOSE = DEPLOY / "docker" / "docker-compose.yaml"
DOCKER_INSTANCE = DEPLOY / "docker" / "dagster.yaml"
DOCKER_WORKSPACE = DEPLOY / "docker" / "workspace.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "docker" / "coupa-d365.env.example"
ROOT_INSTANCE = REPO / "dagster.yaml"

# Variables whose value is a credential (SYNC_DATABASE_URL carries the database password).
SECRET_VARIABLES = frozenset(
    {"COUPA_CLIENT_SECRET", "D365_CLIENT_SECRET", "COUPA_WEBHOOK_SECRET", "SYNC_DATABASE_URL", "DAGSTER_PG_PASSWORD"}
)
# ${NAME...} in a Compose file; $${...} is an escaped dollar for the container's shell.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def known_variable(name: str) -> bool:
    """A variable the connector reads (settings.ENV_VARS) or one of Dagster's own."""
    return name in ENV_VARS or name.startswith("DAGSTER_")


def env_file_entries(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: {line!r} is not NAME=value"
            entries[name] = value
    return entries


def variable_name(entry: str) -> str:
    """``NAME`` of a launcher env_vars entry (``NAME`` or ``NAME=value``)."""
    return entry.split("=", 1)[0]


# --------------------------------------------------------------------------------------- Helm chart
def _pick(section: Mapping[str, Any], mapping: Mapping[str, str], where: str) -> dict[str, Any]:
    unknown = set(section) - set(mapping)
    if unknown:
        raise KeyError(f"{where}: {sorted(unknown)} not rendered by render_helm_instance; add their chart names")
    return {mapping[key]: value for key, value in section.items() if value is not None}


K8S_RUN_LAUNCHER_KEYS = {
    "imagePullPolicy": "image_pull_policy",
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "envConfigMaps": "env_config_maps",
    "envSecrets": "env_secrets",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "resources": "resources",
    "schedulerName": "scheduler_name",
    "securityContext": "security_context",
    "runK8sConfig": "run_k8s_config",
}
RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobSpecConfig": "job_spec_config",
    "jobMetadata": "job_metadata",
}
QUEUED_RUN_COORDINATOR_KEYS = {
    "maxConcurrentRuns": "max_concurrent_runs",
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
    "dequeueNumWorkers": "dequeue_num_workers",
    "dequeueUseThreads": "dequeue_use_threads",
}
RUN_MONITORING_KEYS = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "cancelTimeoutSeconds": "cancel_timeout_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "pollIntervalSeconds": "poll_interval_seconds",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}
CONCURRENCY_POOLS_KEYS = {
    "defaultLimit": "default_limit",
    "granularity": "granularity",
    "opGranularityRunBuffer": "op_granularity_run_buffer",
}
CONCURRENCY_RUNS_KEYS = {"maxConcurrentRuns": "max_concurrent_runs", "tagConcurrencyLimits": "tag_concurrency_limits"}


def _names(refs: Iterable[Mapping[str, str]]) -> list[str]:
    return [ref["name"] for ref in refs if "name" in ref]


def render_k8s_run_launcher(values: Mapping[str, Any], namespace: str, release: str) -> dict[str, Any]:
    """``run_launcher.config`` as the chart writes it for ``runLauncher.type: K8sRunLauncher``: the
    chart's fixed entries (DAGSTER_HOME, the instance ConfigMap, the PostgreSQL password Secret, its run
    ConfigMap) plus the values section, renamed."""
    section = dict(values["runLauncher"]["config"]["k8sRunLauncher"])
    picked = _pick(section, K8S_RUN_LAUNCHER_KEYS, "runLauncher.config.k8sRunLauncher")
    config: dict[str, Any] = {
        "load_incluster_config": picked.pop("load_incluster_config"),
        "job_namespace": picked.pop("job_namespace", None) or namespace,
        "image_pull_policy": picked.pop("image_pull_policy"),
        "service_account_name": release,
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}, *_names(picked.pop("env_config_maps"))],
    }
    if secrets := _names(picked.pop("env_secrets", [])):
        config["env_secrets"] = secrets
    if "run_k8s_config" in picked:
        picked["run_k8s_config"] = _pick(
            picked["run_k8s_config"], RUN_K8S_CONFIG_KEYS, "runLauncher.config.k8sRunLauncher.runK8sConfig"
        )
    config.update({key: value for key, value in picked.items() if value not in ([], {}, "")})
    return config


def render_helm_instance(values: Mapping[str, Any], namespace: str, release: str = "dagster") -> dict[str, Any]:
    """The dagster.yaml the chart renders into its instance ConfigMap, for the sections values.yaml sets."""
    pg = values["postgresql"]
    username = {"env": "DAGSTER_PG_USERNAME"} if values.get("global", {}).get("postgresqlSecretUsernameKey") else None
    postgres_db = {
        "username": username or pg["postgresqlUsername"],
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"],
        "db_name": pg["postgresqlDatabase"],
        "port": pg["service"]["port"],
        "params": pg.get("postgresqlParams", {}),
    }
    instance: dict[str, Any] = {
        "scheduler": {"module": "dagster._core.scheduler", "class": "DagsterDaemonScheduler"},
        "schedule_storage": {
            "module": "dagster_postgres.schedule_storage",
            "class": "PostgresScheduleStorage",
            "config": {"postgres_db": postgres_db},
        },
        "run_storage": {
            "module": "dagster_postgres.run_storage",
            "class": "PostgresRunStorage",
            "config": {"postgres_db": postgres_db},
        },
        "event_log_storage": {
            "module": "dagster_postgres.event_log",
            "class": "PostgresEventLogStorage",
            "config": {"postgres_db": postgres_db},
        },
        "telemetry": {"enabled": values.get("telemetry", {}).get("enabled", True)},
    }
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    instance["run_launcher"] = {
        "module": "dagster_k8s",
        "class": "K8sRunLauncher",
        "config": render_k8s_run_launcher(values, namespace, release),
    }
    daemon = values["dagsterDaemon"]
    if daemon["enabled"] and daemon["runCoordinator"]["enabled"]:
        assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
        queued = daemon["runCoordinator"]["config"].get("queuedRunCoordinator") or {}
        coordinator: dict[str, Any] = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
        if config := _pick(queued, QUEUED_RUN_COORDINATOR_KEYS, "queuedRunCoordinator"):
            coordinator["config"] = config
        instance["run_coordinator"] = coordinator
    if daemon["enabled"] and daemon.get("runMonitoring", {}).get("enabled"):
        instance["run_monitoring"] = _pick(daemon["runMonitoring"], RUN_MONITORING_KEYS, "runMonitoring")
    retries = daemon.get("runRetries", {})
    if daemon["enabled"] and retries.get("enabled"):
        instance["run_retries"] = {
            "enabled": True,
            **({"max_retries": retries["maxRetries"]} if retries.get("maxRetries") else {}),
        }
    concurrency = values.get("concurrency", {})
    if concurrency.get("enabled"):
        rendered: dict[str, Any] = {}
        if pools := _pick(concurrency.get("pools", {}), CONCURRENCY_POOLS_KEYS, "concurrency.pools"):
            rendered["pools"] = pools
        if runs := _pick(concurrency.get("runs", {}), CONCURRENCY_RUNS_KEYS, "concurrency.runs"):
            rendered["runs"] = runs
        instance["concurrency"] = rendered
    return instance


# --------------------------------------------------------------------------------------- Dagster's view
@dataclass(frozen=True)
class EffectiveLimits:
    """What dagster-daemon enforces, as Dagster reads it from an instance config."""

    max_concurrent_runs: int
    tag_concurrency_limits: list[dict[str, Any]]
    default_pool_limit: int | None
    dequeue_interval_seconds: int | None
    run_monitoring: dict[str, Any]
    run_retries: tuple[bool, int]


def validated_instance_config(instance_config: Mapping[str, Any], home: Path) -> Mapping[str, Any]:
    """``instance_config`` written as ``home``/dagster.yaml and loaded the way DagsterInstance loads its
    file (``dagster_instance_config``: the instance schema, the concurrency rules); raises
    DagsterInvalidConfigError naming what is wrong."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dict(instance_config), sort_keys=False))
    validated, _custom_instance_class = dagster_instance_config(str(home))
    return validated


def effective_limits(instance_config: Mapping[str, Any], home: Path) -> EffectiveLimits:
    """The run queue, pool and monitoring settings Dagster derives from ``instance_config``: validated
    as DagsterInstance validates its file, the run coordinator built from its config the way the
    instance builds it, and the queue read back through Dagster's ConcurrencyConfig."""
    validated = validated_instance_config(instance_config, home)
    entry = validated["run_coordinator"]
    coordinator = ConfigurableClassData(
        entry["module"], entry["class"], yaml.safe_dump(entry.get("config") or {})
    ).rehydrate(as_type=QueuedRunCoordinator)
    concurrency = ConcurrencyConfig.from_concurrency_settings(
        validated.get("concurrency") or {}, coordinator.get_run_queue_config()
    )
    queue = concurrency.run_queue_config
    assert queue is not None
    retries = validated.get("run_retries") or {}
    return EffectiveLimits(
        max_concurrent_runs=queue.max_concurrent_runs,
        tag_concurrency_limits=[dict(limit) for limit in queue.tag_concurrency_limits],
        default_pool_limit=concurrency.pool_config.default_pool_limit,
        dequeue_interval_seconds=coordinator.dequeue_interval_seconds,
        run_monitoring=dict(validated.get("run_monitoring") or {}),
        run_retries=(bool(retries.get("enabled")), int(retries.get("max_retries") or 0)),
    )
