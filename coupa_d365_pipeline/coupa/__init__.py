"""Coupa side: REST client (plain Python), models, Dagster resource and assets."""
