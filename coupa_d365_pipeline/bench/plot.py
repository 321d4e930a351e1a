"""bench.png: documents booked over time, one line per path (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

from .model import BenchDocument


def write_plot(doc: BenchDocument, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for name, points in doc.series.items():
            if not points:
                continue
            ax.step([t for t, _ in points], [n for _, n in points], where="post", label=name.value)
        s = doc.settings
        ax.set_title(
            f"Documents booked over time ({s.invoices} invoices; latency D365 {s.d365_latency_ms:g} ms, "
            f"Coupa {s.coupa_latency_ms:g} ms)",
            fontsize=10,
        )
        ax.set_xlabel("seconds since the path started")
        ax.set_ylabel("documents booked (floor: exported)")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
