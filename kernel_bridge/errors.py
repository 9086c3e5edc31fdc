"""Errors the HTTP layer maps, importable without loading Jupyter machinery."""

from __future__ import annotations


class ContextError(Exception):
    """A route-level failure; `str()` is the exact plain-text body for the client."""
