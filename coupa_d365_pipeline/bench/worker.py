"""One bench path in its own process, so its peak RSS is its own: ``python -m coupa_d365_pipeline.bench.worker
PATH`` with the sandboxes' environment. Prints one JSON line: documents, started/ended (Unix seconds around
the measured work, imports and client setup excluded) and peak_rss_mb. ``phases`` prints instead the median
phases of the runs on the instance in ``DAGSTER_HOME`` (``coupa-d365 bench-webhooks``)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable


def _work(path: str) -> Callable[[], int]:
    if path in ("baseline", "floor"):
        from . import naive

        return naive.run_baseline if path == "baseline" else naive.run_floor
    if path in ("odata", "dmf"):
        from .dagster_path import prepare_documents

        return prepare_documents()
    raise SystemExit(f"unknown bench path {path!r}; expected setup, baseline, odata, dmf or floor")


def main(argv: list[str]) -> int:
    from ..demo import peak_rss_mb

    if len(argv) != 1:
        usage = "usage: python -m coupa_d365_pipeline.bench.worker setup|phases|baseline|odata|dmf|floor"
        print(usage, file=sys.stderr)
        return 2
    if argv[0] == "setup":
        from .dagster_path import run_setup

        run_setup()
        return 0
    if argv[0] == "phases":  # where the time of the event-driven runs went (bench-webhooks)
        from .dagster_path import run_phases

        print(json.dumps(run_phases()))
        return 0
    work = _work(argv[0])
    started = time.time()
    documents = work()
    ended = time.time()
    print(json.dumps({"documents": documents, "started": started, "ended": ended, "peak_rss_mb": peak_rss_mb()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
