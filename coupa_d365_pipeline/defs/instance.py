"""The production instance's class (``instance_class`` in the root ``dagster.yaml``): Dagster's own
instance plus one check that runs before Dagster reads the file's storage settings.

Why: Dagster's CLI reads ``./dagster.yaml`` when ``DAGSTER_HOME`` is unset (``dagster dev`` and
``dagster definitions validate`` build a temporary instance from the current directory's file). From
the repository root that is the production file, whose PostgreSQL settings come from ``DAGSTER_PG_*``;
without them Dagster prints one config error with a stack trace per variable. Dagster calls
``config_schema()`` of the ``instance_class`` before it validates the rest of the file, so the check
lives there and stops with one line saying what to set — for production and for local work.
"""

import os
from collections.abc import Mapping
from typing import Any

import click
import dagster as dg
from dagster._core.instance.ref import InstanceRef

PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


class ProductionSettingsMissing(click.ClickException):
    """Shown by Dagster's CLIs (click) as one ``Error: ...`` line, exit code 1."""


def missing_settings_message(missing: list[str]) -> str:
    return (
        f"this dagster.yaml is the production instance (PostgreSQL) and {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not set: for local work run "
        "`export DAGSTER_HOME=$PWD/.dagster_home` (SQLite, made by scripts/bootstrap.sh); "
        "for production set the DAGSTER_PG_* variables (README: Production instance)"
    )


class ProductionInstance(dg.DagsterInstance):
    """A :class:`dagster.DagsterInstance` that checks ``DAGSTER_PG_*`` before Dagster reads them."""

    @classmethod
    def config_schema(cls) -> Mapping[str, Any]:
        missing = [name for name in PG_VARIABLES if os.environ.get(name) is None]
        if missing:
            raise ProductionSettingsMissing(missing_settings_message(missing))
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, Any]:
        return InstanceRef.config_defaults(base_dir)
