"""Fixtures of the flow tests: a temporary Dagster instance and a fully synced sandbox."""

import dagster as dg
import pytest

from coupa_d365_pipeline.state.ledger import Ledger
from coupa_d365_pipeline.state.store import make_engine
from coupa_d365_pipeline_tests.flow.helpers import run_documents, run_master


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def synced(sandbox_env, sandboxes, instance):
    """Master data, then every partition of the test seed in one single-run backfill."""
    master = run_master(instance)
    assert master.success
    documents = run_documents(instance)
    assert documents.success
    return documents


def ledger(sandbox_env) -> Ledger:
    return Ledger(make_engine(sandbox_env["SYNC_DATABASE_URL"]))
