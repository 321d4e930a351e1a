"""Tests for coupa_d365_pipeline.mapping."""
