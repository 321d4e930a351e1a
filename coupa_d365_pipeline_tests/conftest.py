"""Shared fixtures: seeded sandboxes over real HTTP, clients configured against them."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from coupa_d365_pipeline.common.clock import SimulatedClock
from coupa_d365_pipeline.coupa.client import CoupaClient
from coupa_d365_pipeline.d365.client import D365Client
from coupa_d365_pipeline.sandbox.launch import RunningSandboxes, SandboxOptions, start_sandboxes
from coupa_d365_pipeline.sandbox.seed import SeedConfig, SeedData, generate_seed

TEST_SEED = SeedConfig(seed=7, invoices=120, start_date=date(2026, 11, 1), days=6)
# The sandboxes' "now" in tests, whatever the calendar says: a document edited in a test is stamped
# 2026-11-30 (after every seeded updated-at), so every test means the same thing on any date.
TEST_NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


# -- pytest hooks/options: the CI skip policy -------------------------------------------------------
# With --fail-on-skip (.ci/run passes it) a skipped test fails the run unless its reason matches an
# entry here. One entry per legitimate skip, each with the reason it may skip in CI. CI requires
# PostgreSQL (postgres_database fails instead of skipping when CI=true).
ALLOWED_SKIPS: dict[str, str] = {
    # "regex on the skip reason": "why this skip is acceptable in CI",
    r"^chromium not installable here: ": "e2e/test_ui_browser.py needs the system Chromium; .ci/run installs it "
    "(root + apt-get) and names why it could not; with CI=true a missing Chromium fails the test otherwise",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        help="fail the run when a test skips for a reason not in conftest.ALLOWED_SKIPS (CI)",
    )
    parser.addoption(
        "--clock-ahead-days",
        type=int,
        default=0,
        metavar="N",
        help="run the tests with the wall clock of this process N days ahead (time.time, "
        "datetime.now, date.today; monotonic time and sleeps untouched) — CI runs the suite "
        "once a year ahead to prove no test depends on today's date",
    )


class SkipPolicy:
    """Collects skips whose reason is not allowed and turns a green run red."""

    def __init__(self, allowed: dict[str, str]) -> None:
        import re  # local: keeps this hooks section self-contained

        self.allowed = [re.compile(pattern) for pattern in allowed]
        self.unexpected: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
        if not any(pattern.search(reason) for pattern in self.allowed):
            self.unexpected.append((report.nodeid, reason))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.unexpected:
            terminalreporter.section("skips not in conftest.ALLOWED_SKIPS (--fail-on-skip)", red=True)
            for nodeid, reason in self.unexpected:
                terminalreporter.line(f"{nodeid}: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fail-on-skip"):
        config.pluginmanager.register(SkipPolicy(ALLOWED_SKIPS), "coupa-d365-skip-policy")
    days = config.getoption("--clock-ahead-days")
    if days:
        from datetime import timedelta

        import time_machine

        traveller = time_machine.travel(datetime.now(UTC) + timedelta(days=days), tick=True)
        traveller.start()
        config.stash[_CLOCK_TRAVELLER] = traveller


_CLOCK_TRAVELLER = pytest.StashKey[object]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (scripts/test.sh runs two workers, ``--dist loadgroup``) the tests that start
    real processes (marker ``e2e``) share one group and run one after another on one worker, so two of
    them rarely fight for the two cores with their subprocesses; the other worker takes everything else
    and the CI-size chaos soak (e2e/test_soak.py, the longest by far, built to converge under any load),
    which would otherwise make the e2e group the whole run's critical path."""
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            group = "e2e-soak" if item.nodeid.startswith("coupa_d365_pipeline_tests/e2e/test_soak.py") else "e2e"
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_report_header(config: pytest.Config) -> str | None:
    days = config.getoption("--clock-ahead-days")
    if days:
        return f"clock: {days} days ahead, today is {date.today().isoformat()} for these tests"
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    traveller = config.stash.get(_CLOCK_TRAVELLER, None)
    if traveller is not None:
        traveller.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def seed_data() -> SeedData:
    return generate_seed(TEST_SEED)


@pytest.fixture
def sandbox_clock() -> SimulatedClock:
    """The sandboxes' clock: starts at TEST_NOW and runs at real speed (advance() jumps ahead)."""
    return SimulatedClock(TEST_NOW)


@pytest.fixture
def sandbox_options(sandbox_clock: SimulatedClock) -> SandboxOptions:
    return SandboxOptions(seed=TEST_SEED, clock=sandbox_clock)


@pytest.fixture
def sandboxes(seed_data: SeedData, sandbox_options: SandboxOptions) -> Iterator[RunningSandboxes]:
    running = start_sandboxes(sandbox_options, seed=copy.deepcopy(seed_data))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sandbox_env(sandboxes: RunningSandboxes, tmp_path, monkeypatch) -> dict[str, str]:
    env = sandboxes.env() | {
        "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'sync.db'}",
        "COUPA_MAX_REQUESTS_PER_SECOND": "1000",
    }  # the sandbox has no rate limit
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def make_coupa_client(sandboxes: RunningSandboxes, **kwargs) -> CoupaClient:
    env = sandboxes.env()
    kwargs.setdefault("token_warmup_s", 0.0)
    return CoupaClient(
        env["COUPA_BASE_URL"],
        env["COUPA_CLIENT_ID"],
        env["COUPA_CLIENT_SECRET"],
        api_version=env["COUPA_API_VERSION"],
        **kwargs,
    )


def make_d365_client(sandboxes: RunningSandboxes, **kwargs) -> D365Client:
    env = sandboxes.env()
    return D365Client(
        env["D365_BASE_URL"],
        env["D365_TENANT_ID"],
        env["D365_CLIENT_ID"],
        env["D365_CLIENT_SECRET"],
        authority_url=env["D365_AUTHORITY_URL"],
        **kwargs,
    )


@pytest.fixture
def coupa_client(sandboxes: RunningSandboxes) -> Iterator[CoupaClient]:
    with make_coupa_client(sandboxes) as client:
        yield client


@pytest.fixture
def d365_client(sandboxes: RunningSandboxes) -> Iterator[D365Client]:
    with make_d365_client(sandboxes) as client:
        yield client


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def postgres_database():
    """A fresh database on the local PostgreSQL server (skips without one, except in CI)."""
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        if in_ci():
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required in CI but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (user postgres) is not reachable: {exc}")
    conn.autocommit = True
    name = f"coupa_d365_test_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()


@pytest.fixture
def production_pg_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The root dagster.yaml's instance class stops without DAGSTER_PG_* (a one-line hint): the values
    are only validated here, never connected to."""
    for name, value in {
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": "5432",
        "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "unused",
        "DAGSTER_PG_DB": "unused",
    }.items():
        monkeypatch.setenv(name, value)
