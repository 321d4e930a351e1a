"""Coupa -> Dynamics 365 F&O connector (Dagster code location).

The code location is ``coupa_d365_pipeline.definitions`` (workspace.yaml, ``[tool.dagster]``); every
Dagster definition lives in the ``defs`` subpackage. ``code_location`` (that ``defs`` object) is
loaded lazily, so that the plain-Python clients, the sync core and the sandboxes import without
Dagster, and ``dagster definitions validate -m coupa_d365_pipeline`` still finds it. (It cannot be
called ``defs`` here: that name is the subpackage.)
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "code_location":
        try:
            from .definitions import defs
        except AttributeError as exc:  # keep the real cause visible instead of "no attribute 'code_location'"
            raise ImportError(f"coupa_d365_pipeline.definitions failed to load: {exc}") from exc

        return defs
    raise AttributeError(name)


def __dir__() -> list[str]:
    return sorted([*globals(), "code_location"])
