"""Issue 9 item 8: files holding secrets or state are private, and the sandbox (fake credentials,
test hooks) listens on loopback unless told otherwise — and says so when it does not."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from coupa_d365_pipeline.cli import build_parser
from coupa_d365_pipeline.demo import prepare_dagster_home
from coupa_d365_pipeline.sandbox.launch import SandboxOptions, exposure_warning, write_env_file
from coupa_d365_pipeline.state.store import SyncStore

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    import os

    old = os.umask(0o022)  # the usual umask: without care, files come out world-readable
    yield
    os.umask(old)


def test_sandbox_env_file_is_written_0600_and_never_world_readable(tmp_path, open_umask, monkeypatch):
    import os

    target = tmp_path / ".sandbox.env"
    target.write_text("old\n")
    os.chmod(target, 0o644)  # an older, world-readable copy is replaced, not reused
    seen: list[int] = []
    real_write = os.write

    def spying_write(fd: int, data: bytes) -> int:  # the file's mode while the secrets are written
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spying_write)
    write_env_file(target, ["export COUPA_CLIENT_SECRET=sandbox-coupa-secret"])
    assert target.read_text() == "export COUPA_CLIENT_SECRET=sandbox-coupa-secret\n"
    assert mode(target) == 0o600 and seen and all(m == 0o600 for m in seen)
    assert [p.name for p in tmp_path.iterdir()] == [".sandbox.env"]  # no temporary file left behind


def test_sandbox_env_file_is_git_ignored():
    lines = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert ".sandbox.env" in lines


def test_the_sqlite_sync_database_is_private(tmp_path, open_umask):
    store = SyncStore(f"sqlite:///{tmp_path / 'state' / 'sync.db'}")
    store.stage("invoice", [{"id": 1, "status": "approved", "updated-at": "2026-11-01T00:00:00Z"}])
    assert mode(tmp_path / "state") == 0o700
    files = [p for p in (tmp_path / "state").iterdir()]
    assert files and all(mode(p) == 0o600 for p in files), {p.name: oct(mode(p)) for p in files}
    store.dispose()


def test_the_local_dagster_home_is_private(tmp_path, open_umask):
    home = prepare_dagster_home(tmp_path / ".dagster_home")
    assert mode(home) == 0o700 and mode(home / "dagster.yaml") == 0o600


def test_the_sandbox_binds_to_loopback_by_default():
    parser = build_parser()
    assert parser.parse_args(["sandbox"]).host == "127.0.0.1"
    assert parser.parse_args(["demo"]).host == "127.0.0.1"
    assert SandboxOptions().host == "127.0.0.1"
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "sandbox.example.com"])
def test_a_sandbox_bound_beyond_loopback_says_so(host):
    text = exposure_warning(host)
    assert text is not None and text.startswith("WARNING")
    assert host in text and "fake credentials" in text and "127.0.0.1" in text


def test_the_sandbox_command_prints_the_warning(tmp_path, capsys, monkeypatch):
    import coupa_d365_pipeline.cli as cli

    stopped = threading.Event()

    class FakeSandboxes:
        coupa_url, d365_url = "http://0.0.0.0:1", "http://0.0.0.0:2"

        class seed:  # noqa: N801 - mimics the attribute shape
            coupa_suppliers = coupa_purchase_orders = coupa_invoices = []

        def env(self):
            return {"COUPA_CLIENT_SECRET": "sandbox-coupa-secret"}

        def stop(self):
            stopped.set()

    monkeypatch.setattr("coupa_d365_pipeline.sandbox.launch.start_sandboxes", lambda options: FakeSandboxes())
    monkeypatch.setattr(threading.Event, "wait", lambda self, timeout=None: True)
    args = build_parser().parse_args(["sandbox", "--host", "0.0.0.0", "--env-file", str(tmp_path / "e.env")])
    assert cli._sandbox(args) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "0.0.0.0" in err
    assert mode(tmp_path / "e.env") == 0o600 and stopped.is_set()
