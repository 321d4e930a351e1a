"""Start both sandboxes (seeded) on loopback and describe them as the connector's environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ..common.clock import SYSTEM_CLOCK
from ..common.files import write_private_file
from .coupa import CoupaSandbox, CoupaSandboxConfig
from .d365 import D365Sandbox, D365SandboxConfig
from .faults import FaultConfig
from .seed import SeedConfig, SeedData, generate_seed
from .server import SandboxServer, bind_socket

COUPA_CLIENT_ID = "sandbox-client"
COUPA_CLIENT_SECRET = "sandbox-coupa-secret"
D365_TENANT_ID = "contoso-tenant"
D365_CLIENT_ID = "sandbox-app"
D365_CLIENT_SECRET = "sandbox-d365-secret"


@dataclass
class SandboxOptions:
    host: str = "127.0.0.1"
    coupa_port: int = 0
    d365_port: int = 0
    seed: SeedConfig = field(default_factory=SeedConfig)
    coupa_faults: FaultConfig = field(default_factory=FaultConfig)
    d365_faults: FaultConfig = field(default_factory=FaultConfig)
    coupa_token_lifetime_s: int = 86399
    d365_token_lifetime_s: int = 3599
    d365_page_size: int = 10000
    d365_request_budget: int | None = None
    # DMF package API of the D365 sandbox (see sandbox/d365/config.py): data projects (None: the default
    # "Coupa documents") and how long an import executes before its final status
    d365_dmf_data_projects: dict[str, tuple[str, ...]] | None = None
    d365_dmf_execution_s: float = 0.5
    # what both sandboxes take as "now" (Unix seconds): tests pin it with a SimulatedClock
    clock: Callable[[], float] = SYSTEM_CLOCK


@dataclass
class RunningSandboxes:
    seed: SeedData
    coupa: CoupaSandbox
    d365: D365Sandbox
    coupa_server: SandboxServer
    d365_server: SandboxServer
    start_date: date
    coupa_max_rps: float = 20.0
    clock: Callable[[], float] = SYSTEM_CLOCK

    @property
    def coupa_url(self) -> str:
        return self.coupa_server.url

    @property
    def d365_url(self) -> str:
        return self.d365_server.url

    def env(self) -> dict[str, str]:
        """The configuration contract (see settings.ENV_VARS) pointing at these sandboxes."""
        return {
            "COUPA_BASE_URL": self.coupa_url,
            "COUPA_CLIENT_ID": COUPA_CLIENT_ID,
            "COUPA_CLIENT_SECRET": COUPA_CLIENT_SECRET,
            "COUPA_API_VERSION": "R39",
            "COUPA_TOKEN_WARMUP_SECONDS": "0",
            "COUPA_MAX_REQUESTS_PER_SECOND": str(self.coupa_max_rps),
            "D365_BASE_URL": self.d365_url,
            "D365_TENANT_ID": D365_TENANT_ID,
            "D365_CLIENT_ID": D365_CLIENT_ID,
            "D365_CLIENT_SECRET": D365_CLIENT_SECRET,
            "D365_AUTHORITY_URL": self.d365_url,
            "D365_DEFAULT_LEGAL_ENTITY": "usmf",
            "SYNC_START_DATE": self.start_date.isoformat(),
        }

    def stop(self) -> None:
        self.coupa_server.stop()
        self.d365_server.stop()

    def __enter__(self) -> RunningSandboxes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """The warning to show when the sandboxes listen beyond this machine; None on loopback."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: the sandboxes listen on {host}, reachable from other machines; they serve fake "
        "credentials (client secrets printed below) and test hooks under /_sandbox/ that change their data. "
        "Bind to 127.0.0.1 (the default; drop --host) unless you mean it."
    )


def start_sandboxes(options: SandboxOptions | None = None, seed: SeedData | None = None) -> RunningSandboxes:
    options = options or SandboxOptions()
    seed = seed or generate_seed(options.seed)
    coupa = CoupaSandbox(
        CoupaSandboxConfig(
            clients={COUPA_CLIENT_ID: COUPA_CLIENT_SECRET},
            token_lifetime_s=options.coupa_token_lifetime_s,
            fault=options.coupa_faults,
        ),
        seed=seed,
        clock=options.clock,
    )
    d365_socket = bind_socket(options.host, options.d365_port)  # its URL is the token audience: bind first
    d365_port = int(d365_socket.getsockname()[1])
    d365_config = D365SandboxConfig(
        environment_url=f"http://{options.host}:{d365_port}",
        tenant_id=D365_TENANT_ID,
        clients={D365_CLIENT_ID: D365_CLIENT_SECRET},
        token_lifetime_s=options.d365_token_lifetime_s,
        page_size=options.d365_page_size,
        request_budget=options.d365_request_budget,
        fault=options.d365_faults,
        dmf_execution_s=options.d365_dmf_execution_s,
    )
    if options.d365_dmf_data_projects is not None:
        d365_config.dmf_data_projects = dict(options.d365_dmf_data_projects)
    d365 = D365Sandbox(d365_config, seed.d365, clock=options.clock)
    coupa_server = SandboxServer(coupa.app, host=options.host, port=options.coupa_port).start()
    d365_server = SandboxServer(d365.app, host=options.host, sock=d365_socket).start()
    return RunningSandboxes(seed, coupa, d365, coupa_server, d365_server, options.seed.start_date, clock=options.clock)


def write_env_file(path: str | Path, lines: list[str]) -> None:
    """The sandbox environment (it holds client secrets): 0600, written atomically."""
    write_private_file(Path(path), "\n".join(lines) + "\n")


def iter_env_lines(env: dict[str, str]) -> Iterator[str]:
    for name, value in env.items():
        yield f"export {name}={value}"
