"""The Dynamics 365 F&O sandbox (Entra token endpoint + OData ``/data``), split along its seams.

Public names are re-exported here; see :mod:`.app` for what the sandbox emulates. Invariant: nothing
in this package imports the connector code (``coupa_d365_pipeline`` outside ``sandbox/``) or Dagster.
"""

from .app import THROTTLE_MESSAGE, D365Sandbox, D365SandboxConfig, D365State, ODataError, Resp, split_display_value

__all__ = ["D365Sandbox", "D365SandboxConfig", "D365State", "ODataError", "Resp", "THROTTLE_MESSAGE",
           "split_display_value"]
