"""``coupa-d365 bench``: wall time, requests and peak RSS of four ways to book the same seed.

``model`` (the bench.json document) · ``report`` (bench.md: ratios and targets) · ``plot`` (bench.png) ·
``naive`` (the baseline and floor paths, plain clients) · ``dagster_path`` (the OData/DMF paths: the
project's documents run) · ``worker`` (runs one path in its own process) · ``runner`` (fresh sandboxes
per path, the worker subprocess, request counts, the documents-over-time samples) · ``cli`` (the commands).

``coupa-d365 bench-webhooks``: ``latency`` (webhook_latency.json and .md, percentiles) · ``webhook_rig``
(the receiver and dagster-daemon processes on fresh sandboxes; shared with the e2e test).
Only ``dagster_path`` imports Dagster, and only inside a worker process.
"""
