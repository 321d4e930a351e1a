"""The Dynamics 365 F&O sandbox (Entra token endpoint + OData ``/data``), one module per seam.

``app`` (HTTP routes, dispatch, throttling) · ``entra`` (tokens) · ``query`` (OData query options) ·
``odata_filter`` (``$filter``) · ``batch`` (``$batch``/multipart) · ``state`` (:class:`D365State`: OData
writes) on ``validation``, ``purchase_orders`` (PO lifecycle) and ``store`` (tables, changesets) ·
``ap_user`` (the simulated AP user) · ``hooks`` (``/_sandbox/d365/...``) · ``schema``, ``entities``,
``odata``, ``config``. Public names are re-exported here.

Invariant: nothing in this package imports the connector code (``coupa_d365_pipeline`` outside
``sandbox/``) or Dagster.
"""

from .app import D365Sandbox
from .config import D365SandboxConfig
from .entities import ENTITY_INFO
from .odata import THROTTLE_MESSAGE, ODataError, Resp, split_display_value
from .query import parse_key_predicate
from .state import D365State

__all__ = [
    "D365Sandbox",
    "D365SandboxConfig",
    "D365State",
    "ENTITY_INFO",
    "ODataError",
    "Resp",
    "THROTTLE_MESSAGE",
    "parse_key_predicate",
    "split_display_value",
]
