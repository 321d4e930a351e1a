"""Who holds a ledger claim, and keeping it: the process identity a claim records, whether a
claiming process on this host is still alive, and the heartbeat thread that renews the leases of
the claims this process holds (so a request waiting minutes on ``Retry-After`` never loses one).
No Dagster import; used by :mod:`.ledger`."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Protocol


class _ClaimHolder(Protocol):
    def held_claims(self) -> dict[Key, str]: ...

    def renew_claims(self) -> int: ...


class ClaimLostError(RuntimeError):
    """Another run took the document over (our lease expired or our run was declared ended)."""


def process_identity() -> str:
    """Hostname + PID namespace + boot id: a PID is only meaningful inside this triple. Two
    containers sharing a hostname but not a PID namespace never judge each other's PIDs."""
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = ""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}|{pid_namespace}|{boot}"[:255]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Key = tuple[str, int, str]  # (doc_type, coupa_id, scope)


class Heartbeat:
    """Renews the leases of the claims this process holds, every ``interval`` seconds, on a daemon
    thread that runs only while claims are held."""

    def __init__(self, ledger: _ClaimHolder, interval_s: float) -> None:
        self.ledger = ledger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sync-ledger-heartbeat", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                if not self.ledger.held_claims():
                    self._thread = None
                    return
            try:
                self.ledger.renew_claims()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the heartbeat
                continue
