"""Deterministic seed data for the Coupa and D365 sandboxes (see :mod:`.generate` for what it contains).

``generate`` (SeedConfig, SeedData, generate_seed: the Coupa invoices and expectations) · ``documents``
(the Coupa suppliers and purchase orders it builds first) · ``catalogue`` (the fixed Contoso catalogue) ·
``d365_master`` (the matching D365 master data). Invariant: the same config always yields
identical data (no wall clock, one seeded RNG); nothing here imports the connector code or Dagster.
"""

from .catalogue import LEGAL_ENTITIES, fmt_cents
from .generate import SeedConfig, SeedData, generate_seed

__all__ = ["SeedConfig", "SeedData", "generate_seed", "LEGAL_ENTITIES", "fmt_cents"]
