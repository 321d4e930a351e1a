"""D365 F&O side: Entra auth, OData client (plain Python), Dagster resource and assets."""
