"""Every Dagster definition of the connector, grouped by flow (the only package that imports Dagster,
besides the CLI's demo)."""
