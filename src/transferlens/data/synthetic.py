"""Embedded synthetic domains (being written)."""
