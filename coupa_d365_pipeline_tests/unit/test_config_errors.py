"""Issue 9 item 7: every configuration mistake ends in one line that names the variable, says what
is wrong and how to fix it — and never shows the database password."""

from __future__ import annotations

import socket

import pytest

from coupa_d365_pipeline.mapping.config import MappingError, load_mapping
from coupa_d365_pipeline.settings import ConfigError, load_settings
from coupa_d365_pipeline.state.store import SyncStore
from coupa_d365_pipeline_tests.unit.test_settings import GOOD


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when we return: nothing listens there


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_a_mapping_file_that_is_not_utf8_is_named_with_the_fix(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_bytes("charts:\n  Caf\u00e9: usmf\n".encode("latin-1"))
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    text = _one_line(err.value)
    assert str(path) in text and "UTF-8" in text and "COUPA_D365_MAPPING_FILE" in text


@pytest.mark.parametrize(
    "url, expected",
    [
        ("not a url", "not a database URL"),
        ("mysql://sync:hunter2@db.example.com/sync", "driver"),
        ("postgresql+asyncpg://sync:hunter2@db.example.com/sync", "asyncpg"),
        ("oracle+nosuch://sync:hunter2@db.example.com/sync", "postgresql"),
        ("nosuchdb://sync:hunter2@db.example.com/sync", "postgresql"),
        ("sqlite:///{file}/sync.db", "cannot create"),
        ("postgresql://sync:hunter2@127.0.0.1:{port}/sync", "connection refused"),
    ],
)
def test_every_sync_database_url_problem_names_the_variable_and_hides_the_password(tmp_path, url, expected):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = url.format(file=blocker, port=_closed_port())
    with pytest.raises(ConfigError) as err:
        SyncStore(url)
    text = _one_line(err.value)
    assert "SYNC_DATABASE_URL" in text and expected in text, text
    assert "hunter2" not in text
    if "sync:" in url:
        assert "sync:***@" in text


def test_the_dagster_resource_gives_the_same_database_message():
    from coupa_d365_pipeline.defs.resources import SyncStateResource

    url = "mysql://sync:hunter2@db.example.com/sync"
    with pytest.raises(ConfigError) as direct:
        SyncStore(url)
    with pytest.raises(ConfigError) as resource:
        SyncStateResource(database_url=url).store  # noqa: B018 - the property opens the store
    assert str(resource.value) == str(direct.value)


@pytest.mark.parametrize(
    "name, value",
    [
        ("COUPA_MAX_REQUESTS_PER_SECOND", "fast"),
        ("COUPA_MAX_REQUESTS_PER_SECOND", "0"),
        ("COUPA_TOKEN_WARMUP_SECONDS", "five"),
        ("COUPA_TOKEN_WARMUP_SECONDS", "nan"),
    ],
)
def test_non_numeric_coupa_tuning_is_one_line_on_both_config_paths(monkeypatch, name, value):
    from coupa_d365_pipeline.defs.resources import CoupaResource

    with pytest.raises(ConfigError) as cli:
        load_settings(dict(GOOD, **{name: value}))
    text = _one_line(cli.value)
    assert f"{name}={value!r}" in text and "unset it" in text
    monkeypatch.setenv(name, value)
    resource = CoupaResource(base_url=GOOD["COUPA_BASE_URL"], client_id="cid", client_secret="s3cret-value")
    with pytest.raises(ConfigError) as dagster:
        resource.make_client()
    assert str(dagster.value) == text


def test_numeric_coupa_tuning_is_read_by_the_cli_settings():
    settings = load_settings(dict(GOOD, COUPA_MAX_REQUESTS_PER_SECOND="12.5", COUPA_TOKEN_WARMUP_SECONDS="0"))
    assert settings.coupa.max_requests_per_second == 12.5 and settings.coupa.token_warmup_s == 0.0
