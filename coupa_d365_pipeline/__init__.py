"""Coupa -> Dynamics 365 F&O connector (Dagster code location).

``defs`` is loaded lazily so that the plain-Python clients and the sandboxes can be imported
without importing Dagster (``dagster definitions validate -m coupa_d365_pipeline`` still finds it).
"""

from typing import Any

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    if name == "defs":
        try:
            from .definitions import defs
        except AttributeError as exc:  # keep the real cause visible instead of "no attribute 'defs'"
            raise ImportError(f"coupa_d365_pipeline.definitions failed to load: {exc}") from exc

        return defs
    raise AttributeError(name)


def __dir__() -> list[str]:
    return ["defs"]
