"""Every Dagster definition of the connector, grouped by flow; the only package that imports Dagster
(besides ``cli``/``demo``, which run it). ``coupa_d365_pipeline/definitions.py`` merges each flow's ``defs``.

- ``resources.py``: the resources (thin config + lifecycle shells over ``settings``) and their ``defs``
- ``partitions.py``: the daily partitions (SYNC_START_DATE)
- ``master_data.py``, ``documents.py``, ``invoice_status.py``, ``replay.py``: one flow each, owning its
  assets, checks, job and schedules
- ``coupa_staging.py``, ``services.py``, ``metadata.py``, ``outages.py``, ``unfinished.py``: helpers the
  flows share (Coupa window staging, run -> SyncServices, step metadata, outage failures, stuck checks)

Flow modules may import helpers and earlier flows (master_data <- documents <- invoice_status), never
the other way round. Modules that declare assets or ops do not use ``from __future__ import
annotations``: Dagster resolves ``dg.Config`` parameter annotations when the decorator runs.
"""
