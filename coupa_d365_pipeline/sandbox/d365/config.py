"""Configuration of one D365 sandbox (:class:`D365SandboxConfig`).

Invariant: the environment URL is both where the sandbox is served and the token audience (lower-cased,
without trailing slash); every other field has the default a plain test needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..faults import FaultConfig
from .entities import DEFAULT_NUMBER_SEQUENCES


@dataclass
class D365SandboxConfig:
    environment_url: str  # e.g. "http://127.0.0.1:8123" — the token audience; the app is served at this URL
    tenant_id: str = "contoso-tenant"
    clients: dict[str, str] = field(default_factory=lambda: {"sandbox-app": "sandbox-app-secret"})
    token_lifetime_s: int = 3599
    default_company: str = "dat"  # company a read sees without cross-company=true
    page_size: int = 10000  # server-driven paging; tests set small
    request_budget: int | None = None  # max /data operations per budget_window_s before 429
    budget_window_s: float = 300.0
    budget_retry_after_s: int = 2
    fault: FaultConfig = field(default_factory=FaultConfig)
    # active "Default dimension format" for DimensionDisplayValue (order of the segments)
    dimension_format: list[str] = field(default_factory=lambda: ["BusinessUnit", "CostCenter", "Department"])
    dimension_delimiter: str = "-"
    # entity set -> (key property, format with {n}) for keys F&O assigns from a number sequence
    number_sequences: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(DEFAULT_NUMBER_SEQUENCES))
    # DMF (see :mod:`.dmf`): data project name -> DMF entity labels the project maps itself (a package
    # entity with no EntityMapList and not listed here imports zero rows and still "succeeds")
    dmf_data_projects: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"Coupa documents": ()})
    dmf_execution_s: float = 0.5  # ImportFromPackage answers at once; the rows land this much later
    dmf_status_hidden_s: float = 0.0  # GetExecutionSummaryStatus says "not found" this long after submission
    dmf_error_keys_pending_calls: int = 1  # GetImportTargetErrorKeysFileUrl answers "" this often first

    @property
    def audience(self) -> str:
        return self.environment_url.rstrip("/").lower()
