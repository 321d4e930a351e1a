"""peak_rss_mb() is the process's own peak, also in a worker a big process started (the bench's paths
run in workers the parent holding the sandboxes starts). On Linux ru_maxrss survives exec: a worker
started by a 1 GB parent reported 1 GB whatever it did."""

import subprocess
import sys

CHILD = "from coupa_d365_pipeline.demo import peak_rss_mb; print(peak_rss_mb())"
PARENT = f"""
import subprocess, sys
held = bytearray(300 * 1024 * 1024)
for i in range(0, len(held), 4096):
    held[i] = 1
print(subprocess.run([sys.executable, "-c", {CHILD!r}], capture_output=True, text=True, check=True).stdout)
"""


def test_a_worker_started_by_a_big_process_reports_its_own_peak():
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, timeout=60, check=True)
    child_peak = float(out.stdout.strip())
    assert 5 < child_peak < 200, child_peak  # the parent held 300 MB; the child imports a little


def test_the_peak_follows_what_this_process_allocates():
    code = f"held = bytearray(120 * 1024 * 1024)\nfor i in range(0, len(held), 4096):\n    held[i] = 1\n{CHILD}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert float(out.stdout.strip()) >= 120
