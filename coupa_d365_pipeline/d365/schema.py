"""Real F&O entity-set schemas (keys, property names, types, enum members).

``entities.json`` is a copy of ``shared/reference/d365/entities.json`` (taken from a client
generated from a real F&O ``$metadata``). The client checks outgoing writes against it, so a typo in
a field name fails here with a clear message instead of as an HTTP 400 in production; the sandbox
uses the same file to reject what real D365 rejects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class EntitySetSchema:
    name: str
    keys: tuple[str, ...]
    properties: Mapping[str, Mapping[str, Any]]
    enums: Mapping[str, tuple[str, ...]]

    @property
    def company_scoped(self) -> bool:
        return "dataAreaId" in self.keys

    def unknown_properties(self, record: Mapping[str, Any]) -> list[str]:
        return [k for k in record if not k.startswith("@odata.") and k not in self.properties]


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    return json.loads(
        resources.files(__package__ or "coupa_d365_pipeline.d365").joinpath("entities.json").read_text("utf-8")
    )


@cache
def entity_set(name: str) -> EntitySetSchema:
    sets = _raw()["entity_sets"]
    if name not in sets:
        raise KeyError(f"entity set {name!r} is not in the F&O schema file (names are case-sensitive)")
    raw = sets[name]
    return EntitySetSchema(
        name=name,
        keys=tuple(raw["keys"]),
        properties=raw["properties"],
        enums={k: tuple(v) for k, v in raw.get("enums", {}).items()},
    )


def known_entity_sets() -> list[str]:
    return sorted(_raw()["entity_sets"])
