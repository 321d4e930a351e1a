"""Coupa -> D365 F&O mapping: configuration, D365 master data, display strings and documents."""
