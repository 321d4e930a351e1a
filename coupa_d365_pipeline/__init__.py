"""Coupa -> Dynamics 365 F&O connector.

The Dagster code location is ``coupa_d365_pipeline.definitions`` (workspace.yaml, ``[tool.dagster]``,
``dagster ... -m coupa_d365_pipeline.definitions``); every Dagster definition lives in the ``defs``
subpackage. Importing this package imports nothing else, so the plain-Python clients, the sync core
and the sandboxes load without Dagster.
"""
