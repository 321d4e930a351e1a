"""``coupa-d365 credentials``: the encrypted credential store (``common/credentials.py``) from the
command line. Values are never taken from the command line and never printed: ``set`` prompts without
echo (or reads stdin / the environment), ``show`` prints secrets as length + SHA-256 prefix only."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from .common import credentials as store
from .common.credentials import (
    DEFAULT_CREDENTIALS_FILE,
    DEFAULT_KEY_FILE,
    FILE_ENV_VAR,
    KEY_ENV_VAR,
    KEY_FILE_ENV_VAR,
    CredentialName,
    CredentialStoreError,
    KeyRing,
)

NAMES = [name.value for name in CredentialName]


def _now() -> datetime:
    return datetime.now(UTC)


def _keyring(env: Mapping[str, str]) -> KeyRing:
    keyring = store.load_keyring(env)
    if keyring is None:
        raise CredentialStoreError(
            f"no key for the credentials store: run 'coupa-d365 credentials init-key' (writes "
            f"{store.key_file_path(env)}), or set {KEY_ENV_VAR} or {KEY_FILE_ENV_VAR}"
        )
    return keyring


def _set(name: str) -> bool:
    return bool((os.environ.get(name) or "").strip())


def init_key(args: argparse.Namespace) -> int:
    env = os.environ
    path = Path(args.key_file).expanduser() if args.key_file else store.key_file_path(env)
    key = store.generate_key()
    store.create_key_file(path, key)
    print(f"created key file {path} (mode 0600), key fingerprint {store.key_fingerprint(key)}")
    if _set(KEY_ENV_VAR):
        print(f"note: {KEY_ENV_VAR} is set and wins over any key file; unset it to use this one")
    elif args.key_file and path.resolve() != store.key_file_path(env).resolve():
        print(f"point the connector at it: {KEY_FILE_ENV_VAR}={path}")
    print("keep the key apart from the store and its backups: whoever holds both holds the credentials")
    return 0


def _validate(name: str, value: str) -> None:
    if not value or any(c in value for c in "\r\n\0"):
        raise CredentialStoreError(f"{name}: the value is empty or spans lines; nothing was stored")
    if name == CredentialName.COUPA_WEBHOOK_SECRET:
        from .webhooks.signing import parse_secrets

        parse_secrets(value, name)  # ConfigError naming the entry, never the value


def _read_values(args: argparse.Namespace) -> dict[str, str]:
    if args.from_env:
        names = args.names or [name for name in NAMES if _set(name)]
        if not names:
            raise CredentialStoreError(f"--from-env: none of {', '.join(NAMES)} is set in the environment")
        unset = [name for name in names if not _set(name)]
        if unset:
            raise CredentialStoreError(f"--from-env: {', '.join(unset)} not set in the environment; nothing was stored")
        return {name: os.environ[name].strip() for name in names}
    if args.stdin:
        if not args.names:
            raise CredentialStoreError("--stdin: name the variables whose values stdin holds, one line each, in order")
        lines = sys.stdin.read().splitlines()
        if len(lines) < len(args.names):
            raise CredentialStoreError(
                f"--stdin: {len(args.names)} value(s) named but stdin holds {len(lines)} line(s); nothing was stored"
            )
        return {name: line.strip() for name, line in zip(args.names, lines, strict=False)}
    if not sys.stdin.isatty():
        raise CredentialStoreError("stdin is not a terminal: pass --stdin (one value per line) or --from-env")
    values: dict[str, str] = {}
    for name in args.names or NAMES:
        if CredentialName(name).secret:
            value = getpass.getpass(f"{name} (hidden; Enter keeps the stored value): ")
        else:
            value = input(f"{name} (Enter keeps the stored value): ")
        if value.strip():
            values[name] = value.strip()
    return values


def set_values(args: argparse.Namespace) -> int:
    env = os.environ
    keyring = _keyring(env)  # before anything is typed
    values = _read_values(args)
    if not values:
        print("nothing entered; the store is unchanged")
        return 0
    for name, value in values.items():
        _validate(name, value)
    path = store.store_path(env)
    store.update_store(path, keyring, _now(), put=values)
    print(f"stored {', '.join(values)} in {path} (key fingerprint {keyring.fingerprint})")
    shadowed = [name for name in values if _set(name)]
    if shadowed:
        print(
            f"note: the environment sets {', '.join(shadowed)}; a set variable wins over the store "
            "(unset it to use the stored value)"
        )
    return 0


def unset_values(args: argparse.Namespace) -> int:
    env = os.environ
    path = store.store_path(env)
    if not path.exists():
        raise CredentialStoreError(f"no credentials store at {path}; nothing to remove")
    store.update_store(path, _keyring(env), _now(), remove=args.names)
    print(f"removed {', '.join(args.names)} from {path}")
    return 0


def show(args: argparse.Namespace) -> int:
    env = os.environ
    path = store.store_path(env)
    if not path.exists():
        print(f"no credentials store at {path}; create one with 'coupa-d365 credentials set'")
        return 1
    keyring = store.load_keyring(env)
    if keyring is None:
        raise store.no_key_error(path, env)
    fingerprint, document = store.open_store(path, keyring)
    extra = f" (+{len(keyring.keys) - 1} more key(s) accepted)" if len(keyring.keys) > 1 else ""
    print(f"store  {path} (format {document.version}, updated {document.updated_at:%Y-%m-%d %H:%M:%S} UTC)")
    print(f"key    {fingerprint} from {keyring.source}{extra}")
    for name in CredentialName:
        value = document.values.get(name)
        if value is None:
            shown = "-"
        elif name.secret:
            text = value.get_secret_value()
            shown = f"set ({len(text)} chars, sha256 {store.value_fingerprint(text)}...)"
        else:
            shown = value.get_secret_value()
        wins = "   [the environment's value wins]" if _set(name) else ""
        print(f"{name.value:<21} {shown}{wins}")
    return 0


def rotate_key(args: argparse.Namespace) -> int:
    env = os.environ
    target = Path(args.new_key_file).expanduser() if args.new_key_file else None
    path = store.store_path(env)
    result = store.rotate_key(path, _keyring(env), _now(), target)
    print(
        f"re-encrypted {path} under key {result.new_fingerprint} (was {result.old_fingerprint}); "
        "the old key no longer opens it"
    )
    if result.replaced_key_file:
        print(f"the new key replaced the old one in {result.key_file}")
    else:
        print(
            f"the new key is in {result.key_file}: set {KEY_FILE_ENV_VAR}={result.key_file.resolve()} "
            f"(or {KEY_ENV_VAR} to its first line) wherever the connector runs"
        )
    print("backups of the store made before now still need the old key")
    return 0


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """File-system failures (read-only mount, no permission, disk full) as one line naming the file."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as exc:
            raise CredentialStoreError(f"cannot use {exc.filename or 'a file'}: {exc.strerror or exc}") from None

    return run


def _name(text: str) -> str:
    if text not in NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stored name; use one of {', '.join(NAMES)}")
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    names = {"type": _name, "metavar": "NAME"}
    parser = sub.add_parser(
        "credentials",
        help="the encrypted credential store: client ids/secrets, tenant and webhook secret (set, show, rotate-key)",
        description=f"Keep {', '.join(NAMES)} in a Fernet-encrypted file ({FILE_ENV_VAR}, default "
        f"{DEFAULT_CREDENTIALS_FILE}) instead of plain environment variables. The key comes from {KEY_ENV_VAR}, "
        f"else the key file {KEY_FILE_ENV_VAR} (default {DEFAULT_KEY_FILE}). A variable that is set in the "
        "environment wins over the store.",
    )
    commands = parser.add_subparsers(dest="credentials_command", required=True)
    init = commands.add_parser(
        "init-key",
        help="create a new key file (mode 0600; never overwrites one)",
        description=f"Generate a Fernet key into a new 0600 key file (default: {KEY_FILE_ENV_VAR}, else "
        f"{DEFAULT_KEY_FILE}). Refuses to replace an existing file.",
    )
    init.add_argument("--key-file", default=None, help="where to create it (default: as above)")
    init.set_defaults(func=_guarded(init_key))
    setter = commands.add_parser(
        "set",
        help="store values: prompted without echo, or --stdin, or --from-env (never on the command line)",
        description="Store the named values (all six when prompting with no NAME). Prompts without echo on a "
        "terminal (Enter keeps the stored value); --stdin reads one value per line in NAME order; --from-env "
        "copies the named variables (or every one that is set) from the environment.",
    )
    setter.add_argument("names", nargs="*", **names, help=f"one or more of {', '.join(NAMES)}")
    source = setter.add_mutually_exclusive_group()
    source.add_argument("--stdin", action="store_true", help="read the values from stdin, one per line, in NAME order")
    source.add_argument("--from-env", action="store_true", help="copy the values from the environment variables")
    setter.set_defaults(func=_guarded(set_values))
    unset = commands.add_parser("unset", help="remove values from the store")
    unset.add_argument("names", nargs="+", **names, help=f"one or more of {', '.join(NAMES)}")
    unset.set_defaults(func=_guarded(unset_values))
    shower = commands.add_parser(
        "show",
        help="list what the store holds: ids in clear, secrets as length and SHA-256 prefix only",
        description="Print the store file, its key fingerprint and each name: client and tenant ids in clear, "
        "secrets as 'set (N chars, sha256 <8 hex digits>...)', '-' when not stored, and whether the "
        "environment's variable wins. Exits 1 when there is no store.",
    )
    shower.set_defaults(func=_guarded(show))
    rotate = commands.add_parser(
        "rotate-key",
        help="re-encrypt the store under a new key; the old key no longer opens it",
        description="Re-encrypt the store under a new key, atomically (the old file stays readable until the "
        "rename). Without --new-key-file, the key file in use is rewritten: first with the new and old keys, "
        "then (after the store) with the new key only. With --new-key-file PATH, the new key is read from "
        "PATH if it exists (made with init-key, e.g. to stage it first), else generated into it; needed when "
        f"the key comes from {KEY_ENV_VAR}.",
    )
    rotate.add_argument(
        "--new-key-file", default=None, help="where the new key is or goes (default: the key file in use)"
    )
    rotate.set_defaults(func=_guarded(rotate_key))
