"""The encrypted credential store: round trip, tampering, wrong keys, rotation, file modes, the
settings and the webhook receiver reading it, and the ``coupa-d365 credentials`` commands."""

from __future__ import annotations

import io
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coupa_d365_pipeline.cli import main
from coupa_d365_pipeline.common import credentials as store
from coupa_d365_pipeline.common.credentials import CredentialStoreError, KeyRing
from coupa_d365_pipeline.common.redact import redact
from coupa_d365_pipeline.settings import ConfigError, load_settings
from coupa_d365_pipeline.webhooks.service import load_receiver_config, sign_command
from coupa_d365_pipeline.webhooks.signing import verify

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VALUES = {
    "COUPA_CLIENT_ID": "coupa-client-from-store",
    "COUPA_CLIENT_SECRET": "coupa-secret-from-store-9f3k",
    "COUPA_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "D365_TENANT_ID": "tenant-from-store",
    "D365_CLIENT_ID": "d365-app-from-store",
    "D365_CLIENT_SECRET": "d365-secret-from-store-7q2z",
}
SECRETS = [VALUES["COUPA_CLIENT_SECRET"], VALUES["COUPA_WEBHOOK_SECRET"], VALUES["D365_CLIENT_SECRET"]]
CONFIG = {  # everything but the credentials
    "COUPA_BASE_URL": "https://acme.coupahost.com",
    "D365_BASE_URL": "https://contoso.operations.dynamics.com",
    "D365_DEFAULT_LEGAL_ENTITY": "usmf",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "credentials.key"
    store.create_key_file(path, store.generate_key())
    return path


@pytest.fixture
def env(tmp_path: Path, key_file: Path) -> dict[str, str]:
    """Configuration without credentials, pointing at a store (full of VALUES) and its key file."""
    path = tmp_path / "state" / "credentials.enc"
    store.update_store(path, store.read_key_file(key_file), NOW, put=VALUES)
    return {**CONFIG, store.FILE_ENV_VAR: str(path), store.KEY_FILE_ENV_VAR: str(key_file)}


def store_file(env: dict[str, str]) -> Path:
    return Path(env[store.FILE_ENV_VAR])


def test_round_trip_keeps_every_value_and_the_file_holds_none_in_clear(env, key_file):
    path = store_file(env)
    document = store.read_store(path, store.read_key_file(key_file))
    assert document.plain_values() == VALUES and document.updated_at == NOW
    raw = path.read_text()
    for value in VALUES.values():
        assert value not in raw and value not in repr(document)
    assert key_file.read_text().strip() not in raw
    assert (mode(path), mode(key_file), mode(key_file.parent)) == (0o600, 0o600, 0o700)
    assert sorted(p.name for p in path.parent.iterdir()) == ["credentials.enc", "credentials.enc.lock"]  # no temp


def test_every_changed_byte_is_refused_and_nothing_is_read(env, key_file):
    path = store_file(env)
    keyring = store.read_key_file(key_file)
    original = path.read_bytes()
    refused = 0
    for position in range(len(original)):
        for bit in (0x01, 0x20):
            changed = bytearray(original)
            changed[position] ^= bit
            path.write_bytes(bytes(changed))
            with pytest.raises(CredentialStoreError) as err:
                store.read_store(path, keyring)
            message = str(err.value)
            assert str(path) in message and "\n" not in message
            assert not any(value in message for value in VALUES.values())
            refused += 1
    assert refused == 2 * len(original)
    changed = bytearray(original)
    changed[len(original) // 2] ^= 0x01  # inside the token
    path.write_bytes(bytes(changed))
    with pytest.raises(
        CredentialStoreError, match="failed authentication .*nothing was read.*restore it from a backup"
    ):
        store.read_store(path, keyring)
    with pytest.raises(ConfigError) as err:  # the settings use nothing of it: one line, no value
        load_settings(env)
    assert len(err.value.problems) == 1 and str(path) in err.value.problems[0]
    assert "failed authentication" in str(err.value) and "\n" not in str(err.value)


def test_a_token_changed_only_in_bits_a_lenient_decoder_ignores_is_refused(tmp_path, key_file):
    import base64
    import json

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    keyring = store.read_key_file(key_file)
    padded = 0
    for length in range(20, 26):  # token lengths with 0, 1 and 2 '=' of padding
        path = tmp_path / f"store-{length}.enc"
        store.update_store(path, keyring, NOW, put={"COUPA_CLIENT_SECRET": "x" * length})
        envelope = json.loads(path.read_text())
        token = envelope["token"]
        if not token.endswith("="):
            continue
        padded += 1
        last = len(token.rstrip("=")) - 1
        twin = token[:last] + alphabet[alphabet.index(token[last]) ^ 1] + token[last + 1 :]
        assert base64.urlsafe_b64decode(twin) == base64.urlsafe_b64decode(token)  # the same bytes...
        path.write_text(json.dumps({**envelope, "token": twin}))
        with pytest.raises(CredentialStoreError, match="failed authentication"):  # ...but not the same file
            store.read_store(path, keyring)
    assert padded >= 2


def test_a_wrong_key_names_both_fingerprints_and_never_a_key(env, key_file, tmp_path):
    other = tmp_path / "other.key"
    store.create_key_file(other, store.generate_key())
    with pytest.raises(CredentialStoreError) as err:
        store.read_store(store_file(env), store.read_key_file(other))
    message = str(err.value)
    right, wrong = store.read_key_file(key_file), store.read_key_file(other)
    assert f"was encrypted with key {right.fingerprint}" in message and wrong.fingerprint in message
    assert store.KEY_FILE_ENV_VAR in message and str(store_file(env)) in message
    assert right.keys[0].decode() not in message and wrong.keys[0].decode() not in message
    with pytest.raises(ConfigError, match="was encrypted with key"):
        load_settings({**env, store.KEY_FILE_ENV_VAR: str(other)})


def test_a_store_without_its_key_is_an_error_naming_the_fix(env, tmp_path):
    missing = {**env, store.KEY_FILE_ENV_VAR: str(tmp_path / "nope.key")}
    with pytest.raises(ConfigError, match="names .*nope.key, which does not exist"):
        load_settings(missing)
    bad = {**env, store.KEY_ENV_VAR: "not-a-key"}
    with pytest.raises(ConfigError, match="COUPA_D365_CREDENTIALS_KEY: key 1 of 1 is not a Fernet key"):
        load_settings(bad)


def test_settings_take_the_store_when_the_environment_is_unset_and_the_environment_wins(env):
    settings = load_settings(env)
    assert settings.coupa.client_id == VALUES["COUPA_CLIENT_ID"]
    assert settings.coupa.client_secret.get_secret_value() == VALUES["COUPA_CLIENT_SECRET"]
    assert (settings.d365.tenant_id, settings.d365.client_id) == (VALUES["D365_TENANT_ID"], VALUES["D365_CLIENT_ID"])
    assert settings.d365.client_secret.get_secret_value() == VALUES["D365_CLIENT_SECRET"]
    assert settings.sync.webhook_secret is not None
    assert settings.sync.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert not any(secret in repr(settings) for secret in SECRETS)
    assert all(redact(f"x {secret} y") == "x *** y" for secret in SECRETS)  # registered for log redaction

    overridden = load_settings({**env, "COUPA_CLIENT_SECRET": "from-env", "D365_CLIENT_ID": "env-app"})
    assert overridden.coupa.client_secret.get_secret_value() == "from-env"
    assert overridden.d365.client_id == "env-app"
    assert overridden.coupa.client_id == VALUES["COUPA_CLIENT_ID"]  # the others still come from the store
    empty = load_settings({**env, "COUPA_CLIENT_SECRET": "  "})  # set but empty counts as unset
    assert empty.coupa.client_secret.get_secret_value() == VALUES["COUPA_CLIENT_SECRET"]


def test_the_store_is_not_opened_when_the_environment_sets_every_credential(env):
    path = store_file(env)
    path.write_text("garbage")
    full = {**env, **{name: f"env-{name.lower()}" for name in VALUES}, "COUPA_WEBHOOK_SECRET": WEBHOOK_SECRET}
    assert load_settings(full).coupa.client_id == "env-coupa_client_id"
    with pytest.raises(ConfigError, match="is damaged or not a coupa-d365 credentials store"):
        load_settings({**full, "D365_CLIENT_SECRET": ""})


def test_the_webhook_receiver_and_sign_take_the_secret_from_the_store(env):
    config = load_receiver_config(env)
    assert [s.position for s in config.secrets] == [1]
    headers = dict(line.split(": ", 1) for line in sign_command("msg_1", 1_700_000_000, b"{}", env).splitlines())
    assert verify(config.secrets, headers, b"{}", now=lambda: 1_700_000_000).secret_position == 1
    from_env = load_receiver_config({**env, "COUPA_WEBHOOK_SECRET": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"})
    assert from_env.secrets[0].key == b"ABCDEFGHIJKLMNOPQRSTUVWX"


def test_rotation_in_place_keeps_the_values_and_retires_the_old_key(env, key_file):
    path = store_file(env)
    old = store.read_key_file(key_file)
    result = store.rotate_key(path, old, NOW, None)
    new = store.read_key_file(key_file)
    assert result.replaced_key_file and result.key_file == key_file
    assert (result.old_fingerprint, result.new_fingerprint) == (old.fingerprint, new.fingerprint)
    assert len(new.keys) == 1 and new.keys != old.keys
    with pytest.raises(CredentialStoreError, match="was encrypted with key"):
        store.read_store(path, old)
    assert store.read_store(path, new).plain_values() == VALUES
    assert load_settings(env).coupa.client_secret.get_secret_value() == VALUES["COUPA_CLIENT_SECRET"]
    assert (mode(path), mode(key_file)) == (0o600, 0o600)


def test_rotation_interrupted_after_the_key_file_leaves_a_store_that_opens(env, key_file, monkeypatch):
    path = store_file(env)
    before = path.read_bytes()
    real_write = store.write_atomic

    def crash_on_store(target: Path, text: str) -> None:
        if target == path:
            raise OSError("disk full")
        real_write(target, text)

    monkeypatch.setattr(store, "write_atomic", crash_on_store)
    with pytest.raises(OSError):
        store.rotate_key(path, store.read_key_file(key_file), NOW, None)
    assert path.read_bytes() == before
    staged = store.read_key_file(key_file)
    assert len(staged.keys) == 2  # new + old: opens the old store now and the new one later
    assert store.read_store(path, staged).plain_values() == VALUES


def test_rotation_with_the_key_in_the_environment_goes_through_a_new_key_file(env, key_file, tmp_path):
    path = store_file(env)
    old_key = store.read_key_file(key_file).keys[0].decode()
    by_env = {**env, store.KEY_ENV_VAR: old_key}
    keyring = store.load_keyring(by_env)
    assert keyring is not None and keyring.path is None
    before = path.read_bytes()
    with pytest.raises(CredentialStoreError, match="pass --new-key-file"):
        store.rotate_key(path, keyring, NOW, None)
    assert path.read_bytes() == before

    # staged: the new key is made first and deployed next to the old one ("new,old"), then the store moves
    staged = tmp_path / "new.key"
    store.create_key_file(staged, store.generate_key())
    new_key = store.read_key_file(staged).keys[0].decode()
    both = store.load_keyring({**env, store.KEY_ENV_VAR: f"{new_key},{old_key}"})
    assert both is not None and store.read_store(path, both).plain_values() == VALUES  # old store, both keys
    result = store.rotate_key(path, both, NOW, staged)
    assert not result.replaced_key_file and result.new_fingerprint == store.key_fingerprint(new_key.encode())
    assert store.read_store(path, both).plain_values() == VALUES
    assert store.read_store(path, KeyRing((new_key.encode(),), "test")).plain_values() == VALUES
    with pytest.raises(ConfigError, match="was encrypted with key"):
        load_settings(by_env)  # the old key alone no longer opens it
    with pytest.raises(CredentialStoreError, match="holds the key the store is encrypted with already"):
        store.rotate_key(path, both, NOW, staged)


def test_a_key_file_is_never_overwritten(key_file):
    before = key_file.read_bytes()
    with pytest.raises(CredentialStoreError, match="exists already"):
        store.create_key_file(key_file, store.generate_key())
    assert key_file.read_bytes() == before


def test_the_cli_stores_shows_and_rotates_without_printing_a_secret(tmp_path, monkeypatch, capsys):
    path = tmp_path / "cli" / "credentials.enc"
    key = tmp_path / "cli-keys" / "k.key"
    for name in VALUES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(store.KEY_ENV_VAR, raising=False)
    monkeypatch.setenv(store.FILE_ENV_VAR, str(path))
    monkeypatch.setenv(store.KEY_FILE_ENV_VAR, str(key))

    assert main(["credentials", "set", "COUPA_CLIENT_SECRET", "--stdin"]) == 2
    assert "k.key, which does not exist" in capsys.readouterr().err and not path.exists()
    assert main(["credentials", "init-key"]) == 0
    assert mode(key) == 0o600
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{VALUES['COUPA_CLIENT_ID']}\n{VALUES['COUPA_CLIENT_SECRET']}\n"))
    assert main(["credentials", "set", "COUPA_CLIENT_ID", "COUPA_CLIENT_SECRET", "--stdin"]) == 0
    monkeypatch.setenv("D365_CLIENT_SECRET", VALUES["D365_CLIENT_SECRET"])
    monkeypatch.setenv("COUPA_WEBHOOK_SECRET", WEBHOOK_SECRET)
    assert main(["credentials", "set", "--from-env"]) == 0
    monkeypatch.setenv("COUPA_WEBHOOK_SECRET", "whsec_c2hvcnQ=")
    assert main(["credentials", "set", "--from-env", "COUPA_WEBHOOK_SECRET"]) == 2  # validated, not stored
    monkeypatch.delenv("COUPA_WEBHOOK_SECRET")
    assert main(["credentials", "show"]) == 0
    assert main(["credentials", "rotate-key"]) == 0
    assert main(["credentials", "show"]) == 0
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out and secret not in err
    shown = [line.split() for line in out.splitlines() if line.startswith(("COUPA_", "D365_"))]
    assert len(shown) == 12
    assert shown[:6] == [
        ["COUPA_CLIENT_ID", VALUES["COUPA_CLIENT_ID"]],
        ["COUPA_CLIENT_SECRET", "set", f"({len(VALUES['COUPA_CLIENT_SECRET'])}", "chars,", "sha256",
         store.value_fingerprint(VALUES["COUPA_CLIENT_SECRET"]) + "...)"],
        ["COUPA_WEBHOOK_SECRET", "set", f"({len(WEBHOOK_SECRET)}", "chars,", "sha256",
         store.value_fingerprint(WEBHOOK_SECRET) + "...)"],
        ["D365_TENANT_ID", "-"],
        ["D365_CLIENT_ID", "-"],
        ["D365_CLIENT_SECRET", "set", f"({len(VALUES['D365_CLIENT_SECRET'])}", "chars,", "sha256",
         store.value_fingerprint(VALUES["D365_CLIENT_SECRET"]) + "...)", "[the", "environment's", "value", "wins]"],
    ]  # fmt: skip
    assert "entry 1 of 1 decodes to 5 bytes" in err
    assert "the old key no longer opens it" in out and f"the new key replaced the old one in {key}" in out
    assert (mode(path), mode(key)) == (0o600, 0o600)
    stored = store.read_store(path, store.read_key_file(key)).plain_values()
    assert stored == {
        name: VALUES[name] for name in ("COUPA_CLIENT_ID", "COUPA_CLIENT_SECRET", "D365_CLIENT_SECRET")
    } | {"COUPA_WEBHOOK_SECRET": WEBHOOK_SECRET}


def test_set_prompts_secrets_without_echo_and_enter_keeps_the_stored_value(env, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    hidden: list[str] = []
    echoed: list[str] = []
    answers = {"COUPA_CLIENT_SECRET": "typed-secret-4242", "D365_CLIENT_ID": "typed-app"}

    def getpass(prompt: str) -> str:
        hidden.append(prompt.split()[0])
        return answers.get(prompt.split()[0], "")

    def ask(prompt: str) -> str:
        echoed.append(prompt.split()[0])
        return answers.get(prompt.split()[0], "")

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr("builtins.input", ask)
    assert main(["credentials", "set"]) == 0
    assert hidden == ["COUPA_CLIENT_SECRET", "COUPA_WEBHOOK_SECRET", "D365_CLIENT_SECRET"]
    assert echoed == ["COUPA_CLIENT_ID", "D365_TENANT_ID", "D365_CLIENT_ID"]
    stored = store.read_store(store_file(env), store.read_key_file(Path(env[store.KEY_FILE_ENV_VAR])))
    assert stored.plain_values() == VALUES | answers
    assert "typed-secret-4242" not in capsys.readouterr().out
