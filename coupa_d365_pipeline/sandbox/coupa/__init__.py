"""The Coupa Core API sandbox, one module per seam (see :mod:`.app` for what it emulates).

``app`` (routes, writes) · ``auth`` (tokens, request checks) · ``filters`` · ``state`` · ``common``.

Public names are re-exported here. Invariant: nothing in this package imports the connector code
(``coupa_d365_pipeline`` outside ``sandbox/``) or Dagster.
"""

from .app import CoupaSandbox, CoupaSandboxConfig, CoupaState, create_coupa_app

__all__ = ["CoupaSandbox", "CoupaSandboxConfig", "CoupaState", "create_coupa_app"]
