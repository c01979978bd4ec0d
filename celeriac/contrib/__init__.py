"""Integrations and testing helpers."""
