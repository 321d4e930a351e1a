"""Fixtures shared by the mapping tests: the default seed, the default mapping and D365 master data."""

import pytest

from coupa_d365_pipeline.mapping.config import load_mapping
from coupa_d365_pipeline.mapping.master import D365MasterData
from coupa_d365_pipeline.sandbox.seed import generate_seed


@pytest.fixture(scope="module")
def seed():
    return generate_seed()


@pytest.fixture(scope="module")
def mapping():
    return load_mapping(None)


@pytest.fixture(scope="module")
def master(seed):
    return D365MasterData.from_rows(seed.d365)
