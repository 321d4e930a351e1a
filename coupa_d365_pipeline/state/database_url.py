"""SYNC_DATABASE_URL problems as one line each: which variable, what is wrong, how to fix it — with
the password replaced by ``***`` (the URL is echoed so the operator sees which database was meant)."""

from __future__ import annotations

import re

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.engine import URL

from ..settings import ConfigError

NAME = "SYNC_DATABASE_URL"
EXAMPLES = "e.g. postgresql+psycopg2://user:password@host:5432/coupa_d365 or sqlite:///.sync_state/sync.db"
# installed drivers by dialect: what to write instead of a driver that is not installed
SUPPORTED = {"postgresql": "postgresql+psycopg2://", "sqlite": "sqlite:///"}


def redact_url(url: str | URL) -> str:
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", str(url))


def parse_url(raw: str) -> URL:
    try:
        return sa.engine.make_url(raw)
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigError(
            [f"{NAME}={redact_url(raw)!r} is not a database URL; set it to a SQLAlchemy URL, {EXAMPLES}"]
        ) from None


def missing_driver(url: URL, exc: BaseException) -> ConfigError:
    shown = redact_url(url)
    dialect = url.get_backend_name()
    if dialect in SUPPORTED:
        fix = f"write it as {SUPPORTED[dialect]}... (the driver this connector installs)"
    else:
        fix = f"use PostgreSQL ({SUPPORTED['postgresql']}...) or SQLite ({SUPPORTED['sqlite']}...)"
    what = f"the database driver {url.drivername!r} is not installed ({type(exc).__name__}: {exc})"
    return ConfigError([f"{NAME}={shown!r}: {what}; {fix}"])


def unwritable_sqlite(url: URL, path: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        [
            f"{NAME}={redact_url(url)!r}: cannot create the SQLite database at {path} "
            f"({getattr(exc, 'strerror', None) or exc}); point it at a file in a writable directory"
        ]
    )


def connect_error(url: URL, exc: BaseException) -> ConfigError:
    """A failed first connection, explained by what the driver said."""
    shown, text = redact_url(url), str(getattr(exc, "orig", None) or exc)
    if url.password:
        text = text.replace(str(url.password), "***")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    lowered = text.lower()
    if url.get_backend_name() == "sqlite":
        fix = f"cannot open the SQLite database {url.database!r} ({first}); point it at a file in a writable directory"
    elif "connection refused" in lowered:
        fix = f"connection refused at {where}: is the database server running there? fix host/port or start it"
    elif "could not translate host name" in lowered or "name or service not known" in lowered:
        fix = f"host {url.host!r} does not resolve; fix the host name"
    elif "timeout" in lowered or "timed out" in lowered:
        fix = f"no answer from {where} (timed out); check the host, port and firewall"
    elif "password authentication failed" in lowered or "authentication failed" in lowered:
        fix = f"user {url.username!r} was refused (wrong user or password); fix the credentials"
    elif "does not exist" in lowered:
        fix = f"{first.split('FATAL:')[-1].strip()}; create it or fix the name"
    else:
        fix = f"cannot connect ({first}); check the URL and that the database is reachable"
    return ConfigError([f"{NAME}={shown!r}: {fix}"])
