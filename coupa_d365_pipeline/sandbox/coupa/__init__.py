"""The Coupa Core API sandbox, split along its seams (see :mod:`.app` for what it emulates).

Public names are re-exported here. Invariant: nothing in this package imports the connector code
(``coupa_d365_pipeline`` outside ``sandbox/``) or Dagster.
"""

from .app import CoupaSandbox, CoupaSandboxConfig, CoupaState, create_coupa_app

__all__ = ["CoupaSandbox", "CoupaSandboxConfig", "CoupaState", "create_coupa_app"]
