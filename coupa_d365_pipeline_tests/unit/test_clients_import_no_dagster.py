"""The API clients and their shared HTTP/OAuth layer are plain Python: importing them loads no Dagster."""

import subprocess
import sys

CLIENT_MODULES = (
    "coupa_d365_pipeline.common.http", "coupa_d365_pipeline.common.oauth", "coupa_d365_pipeline.common.redact",
    "coupa_d365_pipeline.common.clock", "coupa_d365_pipeline.coupa.client", "coupa_d365_pipeline.d365.client",
    "coupa_d365_pipeline.d365.auth", "coupa_d365_pipeline.d365.odata", "coupa_d365_pipeline.d365.batch",
    "coupa_d365_pipeline.d365.schema",
)


def test_client_modules_import_nothing_from_dagster():
    code = ("import importlib, sys\n"
            f"for name in {CLIENT_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
