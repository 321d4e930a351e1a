"""coupa-d365 bench outputs without running anything: the bench.json model, the ratios and target verdicts of
bench.md, the --paths option, and the bench.png plot."""

import json

import pytest
from pydantic import ValidationError

from coupa_d365_pipeline.bench.cli import _paths
from coupa_d365_pipeline.bench.model import BenchDocument, BenchSettings, PathName, PathResult
from coupa_d365_pipeline.bench.plot import write_plot
from coupa_d365_pipeline.bench.report import render_markdown, targets

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(documents=100, wall_s=10.0, d365=500, coupa=200, rss=150.0) -> PathResult:
    return PathResult(documents=documents, wall_s=wall_s, d365_requests=d365, coupa_requests=coupa, peak_rss_mb=rss)


def document(**paths: PathResult) -> BenchDocument:
    return BenchDocument(
        paths={PathName(k): v for k, v in paths.items()},
        settings=BenchSettings(
            invoices=120,
            seed=42,
            d365_latency_ms=100,
            coupa_latency_ms=50,
            coupa_max_requests_per_second=25,
            approved_invoices=110,
            paths=[PathName(k) for k in paths],
        ),
        series={
            PathName(k): [(0.0, 0), (v.wall_s / 2, v.documents // 2), (v.wall_s, v.documents)] for k, v in paths.items()
        },
    )


def test_targets_met_and_not_met():
    met = document(
        baseline=result(wall_s=100.0, d365=600),
        odata=result(wall_s=20.0, d365=25),  # 0.25 per invoice: exactly on the target
        dmf=result(wall_s=9.0, d365=30),  # 11.1x faster; 1.2x the floor
        floor=result(wall_s=7.5, d365=0),
    )
    assert [(t.verdict, round(t.value or 0, 2)) for t in targets(met)] == [("met", 11.11), ("met", 1.2), ("met", 0.25)]
    missed = document(
        baseline=result(wall_s=100.0),
        odata=result(wall_s=20.0, d365=26),
        dmf=result(wall_s=12.0),  # 8.3x faster; 1.6x the floor
        floor=result(wall_s=7.5),
    )
    assert [t.verdict for t in targets(missed)] == ["not met", "not met", "not met"]


def test_targets_without_their_paths_are_not_measured():
    doc = document(odata=result(d365=10))
    assert [t.verdict for t in targets(doc)] == ["not measured", "not measured", "met"]


def test_markdown_table_ratios():
    doc = document(
        baseline=result(documents=100, wall_s=100.0, d365=550, coupa=200),
        dmf=result(documents=100, wall_s=8.0, d365=30, coupa=310),
        floor=result(documents=110, wall_s=5.0, d365=0, coupa=115),
    )
    text = render_markdown(doc)
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in ("baseline", "dmf", "floor", "odata")
    }
    assert "odata" not in rows
    # documents, wall s, speedup vs baseline, wall / floor, D365 req/invoice, Coupa req/invoice
    assert rows["baseline"][:6] == ["100", "100.00", "1.0x", "20.00x", "5.50", "2.00"]
    assert rows["dmf"][:6] == ["100", "8.00", "12.5x", "1.60x", "0.30", "3.10"]
    assert rows["floor"][:6] == ["110", "5.00", "20.0x", "1.00x", "0.00", "1.05"]
    assert "| dmf >= 10x faster than baseline | 12.50 | met |" in text
    assert "| dmf wall time <= 1.5x floor | 1.60 | not met |" in text
    assert "| odata <= 0.25 D365 requests per invoice | – | not measured |" in text


def test_zero_documents_gives_no_ratio():
    doc = document(baseline=result(documents=0, wall_s=0.0), floor=result(wall_s=0.0))
    text = render_markdown(doc)
    assert "| baseline | 0 | 0.00 | – | – | – | – |" in text


def test_json_round_trip_and_schema():
    doc = document(baseline=result(), floor=result(documents=110))
    data = json.loads(doc.model_dump_json())
    assert set(data) == {"paths", "settings", "series"}
    assert set(data["paths"]) == {"baseline", "floor"}
    assert data["paths"]["floor"] == {
        "documents": 110,
        "wall_s": 10.0,
        "d365_requests": 500,
        "coupa_requests": 200,
        "peak_rss_mb": 150.0,
    }
    assert BenchDocument.model_validate(data) == doc
    data["paths"]["nightly"] = data["paths"]["floor"]
    with pytest.raises(ValidationError):
        BenchDocument.model_validate(data)
    with pytest.raises(ValidationError):
        PathResult(documents=-1, wall_s=1, d365_requests=0, coupa_requests=0, peak_rss_mb=1)


def test_paths_option():
    assert _paths("floor, baseline") == [PathName.BASELINE, PathName.FLOOR]  # always in the canonical order
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="baseline,odata,dmf,floor"):
        _paths("baseline,fast")
    with pytest.raises(argparse.ArgumentTypeError):
        _paths(" , ")


def test_plot_writes_a_png(tmp_path):
    doc = document(baseline=result(wall_s=30.0), dmf=result(wall_s=3.0), floor=result(wall_s=0.0, documents=0))
    path = write_plot(doc, tmp_path / "bench.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 450)


def test_a_sampled_baseline_is_compared_per_document_and_said_so():
    """`--baseline-invoices 100` of 1,000: the naive path is one invoice after another, so its seconds per
    document are what a full run would show; the speedup compares those, and the table says it sampled."""
    doc = document(
        baseline=result(documents=100, wall_s=60.0),  # 0.6 s per invoice
        dmf=result(documents=1000, wall_s=50.0),  # 0.05 s per invoice: 12x
        floor=result(documents=1000, wall_s=40.0),
    )
    doc.settings.baseline_invoices = 100
    speedup = targets(doc)[0]
    assert speedup.verdict == "met" and round(speedup.value or 0, 2) == 12.0
    table = render_markdown(doc)
    assert "| baseline | 100 | 60.00 | 1.0x | 15.00x |" in table  # 0.6 s per invoice, the floor 0.04
    assert "| dmf | 1000 | 50.00 | 12.0x |" in table
    assert "baseline booked only the first 100 approved invoices (--baseline-invoices)" in table
    full = document(baseline=result(documents=100, wall_s=60.0), dmf=result(documents=100, wall_s=5.0))
    assert "--baseline-invoices" not in render_markdown(full) and round(targets(full)[0].value or 0, 2) == 12.0
