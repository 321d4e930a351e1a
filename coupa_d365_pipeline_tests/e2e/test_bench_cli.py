"""`coupa-d365 bench` as a real process on a small seed without latency: all four paths, consistent numbers."""

import json
import os
import subprocess
import sys

import pytest

from coupa_d365_pipeline.bench.model import BenchDocument

pytestmark = pytest.mark.e2e


def test_bench_all_paths(tmp_path):
    out = tmp_path / "bench"
    args = ["--invoices", "30", "--d365-latency-ms", "0", "--coupa-latency-ms", "0", "--out", str(out)]
    # the Coupa limit only slows the test down (the documents runs read every daily partition)
    args += ["--coupa-rps", "500", "--baseline-invoices", "12"]  # the baseline samples its first 12 invoices
    proc = subprocess.run(
        [sys.executable, "-m", "coupa_d365_pipeline.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw = json.loads((out / "bench.json").read_text())
    assert set(raw["paths"]) == {"baseline", "odata", "dmf", "floor"}
    doc = BenchDocument.model_validate(raw)
    paths = {name.value: result for name, result in doc.paths.items()}
    for name, result in paths.items():
        assert result.documents > 0 and result.wall_s > 0 and result.peak_rss_mb > 20, name
        assert result.coupa_requests > 0, name
    for name in ("baseline", "odata", "dmf"):
        assert paths[name].d365_requests > 0, name
    assert paths["floor"].d365_requests == 0
    # the same seed: both project paths book the same invoices; the floor flags every approved one; the
    # baseline booked the mappable ones of the first 12 approved (--baseline-invoices)
    assert paths["odata"].documents == paths["dmf"].documents
    assert paths["floor"].documents == doc.settings.approved_invoices >= paths["odata"].documents
    assert doc.settings.baseline_invoices == 12 and 8 <= paths["baseline"].documents <= 12
    assert paths["baseline"].coupa_requests < paths["odata"].coupa_requests
    # the naive path: a lookup, a header, at least one line per invoice; a flag each in Coupa
    assert paths["baseline"].d365_requests >= 3 * paths["baseline"].documents
    per_invoice = {name: r.d365_requests / r.documents for name, r in paths.items()}
    assert per_invoice["odata"] < per_invoice["baseline"] and per_invoice["dmf"] < per_invoice["baseline"]
    for name, series in doc.series.items():
        assert series[0] == (0.0, 0) and series[-1][1] == doc.paths[name].documents, name
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(series, series[1:], strict=False)), name
    table = (out / "bench.md").read_text()
    assert "| dmf >= 10x faster than baseline |" in table and "| odata | " in table
    assert "The baseline booked only the first 12 approved invoices (--baseline-invoices)" in table
    assert (out / "bench.png").read_bytes().startswith(b"\x89PNG")


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coupa_d365_pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def test_bench_webhooks_writes_the_latency_json_and_table(tmp_path):
    out = tmp_path / "lat"
    args = ["--events", "3", "--spacing-s", "0.2", "--d365-latency-ms", "0", "--coupa-latency-ms", "0"]
    proc = _cli("bench-webhooks", *args, "--coupa-rps", "500", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw = json.loads((out / "webhook_latency.json").read_text())
    assert raw["events"] == 3 and len(raw["latencies_s"]) == 3 and raw["latencies_s"] == sorted(raw["latencies_s"])
    assert 0 < raw["p50_s"] <= raw["p95_s"] == raw["max_s"] == raw["latencies_s"][-1]
    assert raw["target_p95_s"] == 30 and raw["met"] is (raw["p95_s"] <= 30)
    assert raw["settings"]["events"] == 3 and raw["settings"]["spacing_s"] == 0.2
    assert raw["settings"]["d365_latency_ms"] == 0 and raw["settings"]["coupa_max_requests_per_second"] == 500
    assert {"queued", "process_start", "sync_step"} <= raw["where_the_time_goes_s"].keys()
    table = (out / "webhook_latency.md").read_text()
    assert f"| 3 | {raw['p50_s']:.2f} | {raw['p95_s']:.2f} | {raw['max_s']:.2f} | 30 |" in table
    assert f"p95 {raw['p95_s']:.2f} s" in proc.stdout


def test_bench_webhooks_rejects_nonsense_before_starting_anything(tmp_path):
    proc = _cli("bench-webhooks", "--events", "0", "--out", str(tmp_path / "x"), timeout=60)
    assert proc.returncode == 2 and "--events must be at least 1" in proc.stderr
    assert not (tmp_path / "x").exists()
