"""The plain-HTTP part of the envd API (spec envd.md section 5)."""
