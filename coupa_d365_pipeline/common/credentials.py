"""The encrypted credential store: the Coupa and D365 credentials and the webhook secret, in one local
file encrypted with a key held elsewhere (an environment variable or a key file).

The settings read it only for the credential variables the environment leaves unset (a variable that
is set and not empty always wins), so the CLI, the Dagster resources and the webhook receiver all get
the same values through ``settings.with_stored_credentials``.

File format, version 1: one JSON object, the envelope ::

    {"format": "coupa-d365-credentials", "version": 1, "cipher": "fernet",
     "key": "<fingerprint of the key that encrypted it>", "token": "<Fernet token>"}

The Fernet token (AES-128-CBC + HMAC-SHA256: authenticated, so any changed byte is detected before
anything is decrypted) holds the JSON of :class:`StoredCredentials`. The key fingerprint is not a
secret (a SHA-256 prefix of a random key); it only lets a wrong key be told from a damaged file.

Keys are Fernet keys (32 random bytes, url-safe base64). ``COUPA_D365_CREDENTIALS_KEY`` holds one or
more, comma-separated; a key file holds one per line. The first key encrypts, every key decrypts
(``MultiFernet``), so a store can be read under both keys while a rotation is under way.

Writes are atomic (0600 temporary file, fsync, rename, directory fsync) under an exclusive lock, so a
reader sees the old store or the new one, never a mix. Errors are one line naming the file and the
fix; they never contain a value or a key. Plain Python: no Dagster.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from .files import make_private_dirs, write_private_file, write_private_temporary
from .redact import register_secret

FILE_ENV_VAR = "COUPA_D365_CREDENTIALS_FILE"
KEY_ENV_VAR = "COUPA_D365_CREDENTIALS_KEY"
KEY_FILE_ENV_VAR = "COUPA_D365_CREDENTIALS_KEY_FILE"
DEFAULT_CREDENTIALS_FILE = ".sync_state/credentials.enc"
DEFAULT_KEY_FILE = "~/.config/coupa-d365/credentials.key"
FORMAT = "coupa-d365-credentials"
VERSION = 1


class CredentialName(StrEnum):
    """The variables the store may hold. Client ids and the tenant are configuration (shown by
    ``credentials show``); the three ``*_SECRET`` values are secrets (never shown)."""

    COUPA_CLIENT_ID = "COUPA_CLIENT_ID"
    COUPA_CLIENT_SECRET = "COUPA_CLIENT_SECRET"
    COUPA_WEBHOOK_SECRET = "COUPA_WEBHOOK_SECRET"
    D365_TENANT_ID = "D365_TENANT_ID"
    D365_CLIENT_ID = "D365_CLIENT_ID"
    D365_CLIENT_SECRET = "D365_CLIENT_SECRET"

    @property
    def secret(self) -> bool:
        return self.value.endswith("_SECRET")


STORED_NAMES = frozenset(name.value for name in CredentialName)


class CredentialStoreError(Exception):
    """The store or its key cannot be used; the message is one line, names the file and the fix, and
    holds no value. Nothing from the store is used when this is raised."""


class StoredCredentials(BaseModel):
    """The decrypted document. Values are ``SecretStr``: ``repr`` and ``str`` never show them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["coupa-d365-credentials"] = FORMAT
    version: Literal[1] = VERSION
    updated_at: datetime
    values: dict[CredentialName, SecretStr] = {}

    def plaintext(self) -> bytes:
        document = {
            "format": self.format,
            "version": self.version,
            "updated_at": self.updated_at.isoformat(),
            "values": {name.value: value.get_secret_value() for name, value in sorted(self.values.items())},
        }
        return json.dumps(document, sort_keys=True).encode()

    def plain_values(self) -> dict[str, str]:
        return {name.value: value.get_secret_value() for name, value in self.values.items()}


class Envelope(BaseModel):
    """What is on disk around the encrypted document."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["coupa-d365-credentials"]
    version: int
    cipher: Literal["fernet"]
    key: str
    token: str


def key_fingerprint(key: bytes) -> str:
    """16 hex digits identifying a key (not secret: a SHA-256 prefix of 32 random bytes)."""
    return hashlib.sha256(key.strip()).hexdigest()[:16]


def value_fingerprint(value: str) -> str:
    """8 hex digits to compare a stored secret with one at hand (``printf %s "$S" | sha256sum``)."""
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def generate_key() -> bytes:
    return Fernet.generate_key()


@dataclass(frozen=True)
class KeyRing:
    """The keys that open the store: the first encrypts, any decrypts. ``repr`` never shows a key."""

    keys: tuple[bytes, ...] = field(repr=False)
    source: str  # for messages: "COUPA_D365_CREDENTIALS_KEY" or "key file <path>"
    path: Path | None = None  # the key file, when the keys came from one

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.keys[0])

    @property
    def fingerprints(self) -> list[str]:
        return [key_fingerprint(key) for key in self.keys]

    def fernet(self) -> MultiFernet:
        return MultiFernet([Fernet(key) for key in self.keys])


def parse_keys(entries: list[str], where: str) -> tuple[bytes, ...]:
    keys: list[bytes] = []
    for position, raw in enumerate(entries, start=1):
        entry = raw.strip()
        try:
            Fernet(entry.encode())
        except ValueError:
            raise CredentialStoreError(
                f"{where}: key {position} of {len(entries)} is not a Fernet key (44 characters of url-safe "
                "base64); create one with 'coupa-d365 credentials init-key'"
            ) from None
        keys.append(entry.encode())
    if not keys:
        raise CredentialStoreError(f"{where} holds no key; create one with 'coupa-d365 credentials init-key'")
    return tuple(keys)


def read_key_file(path: Path) -> KeyRing:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a key file"
        raise CredentialStoreError(f"cannot read the key file {path}: {reason}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return KeyRing(parse_keys(lines, f"key file {path}"), f"key file {path}", path)


def store_path(env: Mapping[str, str]) -> Path:
    """COUPA_D365_CREDENTIALS_FILE, else the default under the state directory."""
    return Path(env.get(FILE_ENV_VAR) or DEFAULT_CREDENTIALS_FILE).expanduser().absolute()


def key_file_path(env: Mapping[str, str]) -> Path:
    """COUPA_D365_CREDENTIALS_KEY_FILE, else the default in ~/.config."""
    return Path(env.get(KEY_FILE_ENV_VAR) or DEFAULT_KEY_FILE).expanduser().absolute()


def load_keyring(env: Mapping[str, str]) -> KeyRing | None:
    """COUPA_D365_CREDENTIALS_KEY (comma-separated keys) wins; else the key file (its variable or the
    default). None when neither is there; an explicitly named key file that is missing is an error."""
    raw = (env.get(KEY_ENV_VAR) or "").strip()
    if raw:
        return KeyRing(parse_keys(raw.split(","), KEY_ENV_VAR), KEY_ENV_VAR)
    path = key_file_path(env)
    if not path.exists():
        if env.get(KEY_FILE_ENV_VAR):
            raise CredentialStoreError(
                f"{KEY_FILE_ENV_VAR} names {path}, which does not exist; point it at the store's key file "
                "or create a key with 'coupa-d365 credentials init-key'"
            )
        return None
    return read_key_file(path)


def no_key_error(path: Path, env: Mapping[str, str]) -> CredentialStoreError:
    return CredentialStoreError(
        f"credentials store {path} needs its key: set {KEY_ENV_VAR} or {KEY_FILE_ENV_VAR} (default "
        f"{key_file_path(env)}), or create a key with 'coupa-d365 credentials init-key'"
    )


def read_store(path: Path, keyring: KeyRing) -> StoredCredentials:
    """Decrypt and validate the whole store, or raise :class:`CredentialStoreError` (nothing partial)."""
    return open_store(path, keyring)[1]


def open_store(path: Path, keyring: KeyRing) -> tuple[str, StoredCredentials]:
    """(fingerprint of the key the store is encrypted with, the document); see :func:`read_store`."""
    restore = "restore it from a backup, or delete it and store the values again with 'coupa-d365 credentials set'"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CredentialStoreError(f"cannot read credentials store {path}: {exc.strerror or exc}") from None
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError:
        raise CredentialStoreError(
            f"credentials store {path} is damaged or not a coupa-d365 credentials store; {restore}"
        ) from None
    if envelope.version != VERSION:
        raise CredentialStoreError(
            f"credentials store {path} has format version {envelope.version}, this connector reads "
            f"version {VERSION}; use the connector version that wrote it"
        )
    try:
        plaintext = keyring.fernet().decrypt(envelope.token.encode()) if _canonical(envelope.token) else None
    except InvalidToken:
        plaintext = None
    if plaintext is None and envelope.key not in keyring.fingerprints:
        raise CredentialStoreError(
            f"credentials store {path} was encrypted with key {envelope.key}, not with the key(s) from "
            f"{keyring.source} ({', '.join(keyring.fingerprints)}); set {KEY_ENV_VAR} or {KEY_FILE_ENV_VAR} "
            "to the store's key"
        )
    try:
        if plaintext is None or envelope.key not in keyring.fingerprints:
            raise InvalidToken  # the token or the envelope around it was changed
        document = StoredCredentials.model_validate_json(plaintext)
    except (InvalidToken, ValidationError):
        raise CredentialStoreError(
            f"credentials store {path} failed authentication (altered or damaged); nothing was read from it; {restore}"
        ) from None
    for name, value in document.values.items():
        if name.secret:
            register_secret(value.get_secret_value())
    return envelope.key, document


def _canonical(token: str) -> bool:
    """Strict url-safe base64 that re-encodes to itself: no byte of the token can change unnoticed (a
    lenient decoder ignores stray characters and the unused low bits of the last one)."""
    try:
        raw = base64.b64decode(token.replace("-", "+").replace("_", "/"), validate=True)
    except ValueError:
        return False
    return base64.urlsafe_b64encode(raw).decode() == token


def encrypt(document: StoredCredentials, keyring: KeyRing) -> str:
    envelope = Envelope(
        format=FORMAT,
        version=VERSION,
        cipher="fernet",
        key=keyring.fingerprint,
        token=keyring.fernet().encrypt(document.plaintext()).decode(),
    )
    return envelope.model_dump_json() + "\n"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """0600 temporary file, fsync, rename over ``path``, fsync the directory."""
    write_private_file(path, text)
    _fsync_directory(path.parent)


def create_key_file(path: Path, key: bytes) -> None:
    """A new 0600 key file at ``path`` (its directories 0700); refuses to replace an existing file."""
    path = Path(path)
    if path.exists():
        raise CredentialStoreError(f"key file {path} exists already; keep it, or remove it first on purpose")
    make_private_dirs(path.parent)
    temporary = write_private_temporary(path.with_name(f".{path.name}.{os.getpid()}.tmp"), key + b"\n")
    try:
        os.link(temporary, path)  # fails if someone created ``path`` meanwhile: never overwrite a key
    except FileExistsError:
        raise CredentialStoreError(f"key file {path} exists already; keep it, or remove it first on purpose") from None
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the store (a ``.lock`` file next to it)."""
    make_private_dirs(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def stored_values(env: Mapping[str, str], names: list[str]) -> dict[str, str]:
    """The store's values for those of ``names`` the environment leaves unset or empty. The store is
    not opened when the environment sets them all (or when there is no store file)."""
    missing = [name for name in names if not (env.get(name) or "").strip()]
    path = store_path(env)
    if not missing or not path.exists():
        return {}
    keyring = load_keyring(env)
    if keyring is None:
        raise no_key_error(path, env)
    values = read_store(path, keyring).plain_values()
    return {name: values[name] for name in missing if name in values}


def update_store(
    path: Path, keyring: KeyRing, now: datetime, *, put: Mapping[str, str] | None = None, remove: Sequence[str] = ()
) -> StoredCredentials:
    """Set and/or remove values (creating the store if missing) and write it encrypted with the
    keyring's first key."""
    with locked(path):
        current = read_store(path, keyring) if path.exists() else StoredCredentials(updated_at=now)
        values = dict(current.values)
        for name in remove:
            values.pop(CredentialName(name), None)
        for name, value in (put or {}).items():
            values[CredentialName(name)] = SecretStr(value)
        document = StoredCredentials(updated_at=now, values=values)
        write_atomic(path, encrypt(document, keyring))
        return document


@dataclass(frozen=True)
class Rotation:
    old_fingerprint: str
    new_fingerprint: str
    key_file: Path  # where the new key is
    replaced_key_file: bool  # True: the key file the store used was rewritten in place


def rotate_key(path: Path, keyring: KeyRing, now: datetime, new_key_file: Path | None = None) -> Rotation:
    """Re-encrypt the store under a new key. The store must open with ``keyring`` first (else nothing
    changes). The new key comes from ``new_key_file`` when that file exists (made with ``init-key``),
    else it is generated and written there; with no ``new_key_file``, the keyring's own key file is
    rewritten in three atomic steps — new+old keys, then the store under the new key, then the new key
    alone — so a crash at any point leaves a key file that opens the store. Afterwards the old key no
    longer opens the store (backups of the old file still need it)."""
    in_place = new_key_file is None or (
        keyring.path is not None and Path(new_key_file).resolve() == keyring.path.resolve()
    )
    if in_place and keyring.path is None:
        raise CredentialStoreError(
            f"the store key comes from {KEY_ENV_VAR}, which this command cannot change: pass --new-key-file "
            "PATH to receive the new key, then set the variable (or the key file variable) to it"
        )
    with locked(path):
        if not path.exists():
            raise CredentialStoreError(f"no credentials store at {path}; nothing to rotate")
        old, document = open_store(path, keyring)
        if in_place:
            assert keyring.path is not None
            key = generate_key()
            target = keyring.path
            both = KeyRing((key, *keyring.keys), keyring.source, target)
            write_atomic(target, b"\n".join(both.keys).decode() + "\n")
            write_atomic(path, encrypt(document.model_copy(update={"updated_at": now}), both))
            write_atomic(target, key.decode() + "\n")
        else:
            assert new_key_file is not None
            target = Path(new_key_file)
            if target.exists():
                key = read_key_file(target).keys[0]
                if key_fingerprint(key) == old:
                    raise CredentialStoreError(
                        f"key file {target} holds the key the store is encrypted with already; "
                        "give a new key file (or a path that does not exist yet)"
                    )
            else:
                key = generate_key()
                create_key_file(target, key)
            write_atomic(path, encrypt(document.model_copy(update={"updated_at": now}), KeyRing((key,), str(target))))
        return Rotation(old, key_fingerprint(key), target, in_place)
