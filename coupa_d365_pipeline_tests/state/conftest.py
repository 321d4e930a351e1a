"""Fixtures shared by the ledger tests: a SQLite engine and a clock that moves only when told."""

from datetime import UTC, datetime

import pytest

from coupa_d365_pipeline.common.clock import SimulatedClock
from coupa_d365_pipeline.state.store import make_engine

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
IDENTITY = "worker-1|pid:[4026531836]|0a1b2c3d"


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(T0, running=False)
