"""``coupa-d365 bench``: wall time, requests and peak RSS of four ways to book the same seed.

``model`` (the bench.json document) · ``report`` (bench.md: ratios and targets) · ``plot`` (bench.png) ·
``naive`` (the baseline and floor paths, plain clients) · ``dagster_path`` (the OData/DMF paths: the
project's documents run) · ``worker`` (runs one path in its own process) · ``runner`` (fresh sandboxes
per path, the worker subprocess, request counts, the documents-over-time samples) · ``cli`` (the command).
Only ``dagster_path`` imports Dagster, and only inside a worker process.
"""
