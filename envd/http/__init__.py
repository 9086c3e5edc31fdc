"""The plain-HTTP part of the envd API (docs/envd-api.md §6)."""
