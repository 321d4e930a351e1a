"""Run the bench paths one after another, each on fresh sandboxes with the same seed, each in its own
worker process; count the requests each sandbox saw and sample the documents booked twice a second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ..sandbox.faults import FaultConfig
from ..sandbox.launch import RunningSandboxes, SandboxOptions, start_sandboxes
from ..sandbox.seed import SeedConfig
from .model import ALL_PATHS, BenchDocument, BenchSettings, PathName, PathResult

SAMPLE_INTERVAL_S = 0.5
WORKER = [sys.executable, "-m", "coupa_d365_pipeline.bench.worker"]


class BenchError(RuntimeError):
    """A path's worker failed; the message carries the end of its output."""


@dataclass
class BenchOptions:
    out: Path
    invoices: int = 10_000
    seed: int = 42
    d365_latency_ms: float = 100.0
    coupa_latency_ms: float = 50.0
    coupa_max_requests_per_second: float = 25.0
    start_date: date = date(2026, 11, 1)
    paths: list[PathName] = field(default_factory=lambda: list(ALL_PATHS))
    baseline_invoices: int | None = None  # the baseline books only the first this many approved invoices


def booked_in_d365(sandboxes: RunningSandboxes) -> int:
    return len(sandboxes.d365.state.records("VendorInvoiceHeaders"))


def exported_in_coupa(sandboxes: RunningSandboxes) -> int:
    return sum(1 for r in sandboxes.coupa.state.records("invoices") if r.get("exported"))


class Sampler:
    """``count()`` every ``interval_s`` on a thread, as (Unix time, value) pairs."""

    def __init__(self, count: Callable[[], int], interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.count, self.interval_s = count, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def _loop(self) -> None:
        while True:
            self.samples.append((time.time(), self.count()))
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _run_worker(args: list[str], env: dict[str, str], what: str) -> str:
    proc = subprocess.run([*WORKER, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BenchError(f"bench {what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def path_env(sandboxes: RunningSandboxes, path: PathName, workdir: Path, opts: BenchOptions) -> dict[str, str]:
    from ..demo import prepare_dagster_home

    env = dict(os.environ)
    env.update(sandboxes.env())
    env["COUPA_MAX_REQUESTS_PER_SECOND"] = f"{opts.coupa_max_requests_per_second:g}"
    env["DAGSTER_HOME"] = str(prepare_dagster_home(workdir / "dagster_home"))
    env["SYNC_DATABASE_URL"] = f"sqlite:///{(workdir / 'sync.db').resolve()}"
    # odata: never DMF (threshold above the seed size); dmf: always DMF
    env["D365_DMF_THRESHOLD"] = "0" if path == PathName.DMF else str(opts.invoices * 10 + 1000)
    if path == PathName.BASELINE and opts.baseline_invoices:
        env["BENCH_BASELINE_INVOICES"] = str(opts.baseline_invoices)
    return env


def run_path(path: PathName, opts: BenchOptions) -> tuple[PathResult, list[tuple[float, int]], int]:
    """One path on fresh sandboxes: (its result, documents over time, approved invoices in the seed)."""
    workdir = (opts.out / "work" / path.value).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    options = SandboxOptions(
        seed=SeedConfig(seed=opts.seed, invoices=opts.invoices, start_date=opts.start_date),
        coupa_faults=FaultConfig(seed=opts.seed),
        d365_faults=FaultConfig(seed=opts.seed),
    )
    with start_sandboxes(options) as sandboxes:
        approved = sum(1 for inv in sandboxes.seed.coupa_invoices if inv.get("status") == "approved")
        env = path_env(sandboxes, path, workdir, opts)
        if path != PathName.FLOOR:  # vendors and POs in D365, the master data snapshot: where every path starts
            # not measured: no latency yet, and no Coupa request limit (the sandbox has none)
            _run_worker(["setup"], {**env, "COUPA_MAX_REQUESTS_PER_SECOND": "1000"}, f"setup for {path.value}")
        # latency from here on only: the setup is not what is measured
        sandboxes.d365.injector.configure(FaultConfig(seed=opts.seed, latency_ms=opts.d365_latency_ms))
        sandboxes.coupa.injector.configure(FaultConfig(seed=opts.seed, latency_ms=opts.coupa_latency_ms))
        count = exported_in_coupa if path == PathName.FLOOR else booked_in_d365
        before = count(sandboxes)
        d365_seq, coupa_seq = sandboxes.d365.log.next_seq(), sandboxes.coupa.log.next_seq()
        with Sampler(lambda: count(sandboxes) - before) as sampler:
            output = _run_worker([path.value], env, path.value)
        booked = count(sandboxes) - before
        d365_requests = sandboxes.d365.log.next_seq() - d365_seq
        coupa_requests = sandboxes.coupa.log.next_seq() - coupa_seq
    report = json.loads(output.strip().splitlines()[-1])
    started, ended = float(report["started"]), float(report["ended"])
    series = [(0.0, 0)] + [(round(t - started, 3), n) for t, n in sampler.samples if started < t < ended]
    series.append((round(ended - started, 3), booked))
    result = PathResult(
        documents=booked,
        wall_s=round(ended - started, 3),
        d365_requests=d365_requests,
        coupa_requests=coupa_requests,
        peak_rss_mb=round(float(report["peak_rss_mb"]), 1),
    )
    return result, series, approved


def run_bench(opts: BenchOptions, progress: Callable[[str], None] = print) -> BenchDocument:
    results: dict[PathName, PathResult] = {}
    series: dict[PathName, list[tuple[float, int]]] = {}
    approved = 0
    for path in opts.paths:
        progress(f"bench: {path.value} ...")
        results[path], series[path], approved = run_path(path, opts)
        r = results[path]
        progress(
            f"bench: {path.value}: {r.documents} documents in {r.wall_s:.1f} s; D365 {r.d365_requests} requests, "
            f"Coupa {r.coupa_requests}; peak RSS {r.peak_rss_mb:.0f} MB"
        )
    settings = BenchSettings(
        invoices=opts.invoices,
        seed=opts.seed,
        d365_latency_ms=opts.d365_latency_ms,
        coupa_latency_ms=opts.coupa_latency_ms,
        coupa_max_requests_per_second=opts.coupa_max_requests_per_second,
        approved_invoices=approved,
        paths=list(opts.paths),
        baseline_invoices=opts.baseline_invoices if PathName.BASELINE in opts.paths else None,
    )
    return BenchDocument(paths=results, settings=settings, series=series)


def write_outputs(doc: BenchDocument, out: Path) -> list[Path]:
    from .plot import write_plot
    from .report import render_markdown

    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "bench.json", out / "bench.md"
    json_path.write_text(doc.model_dump_json(indent=2) + "\n")
    md_path.write_text(render_markdown(doc))
    return [json_path, md_path, write_plot(doc, out / "bench.png")]
