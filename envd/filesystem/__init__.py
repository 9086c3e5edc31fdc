"""filesystem.Filesystem service: stat, list, make, move, remove and watch (docs/envd-api.md §4)."""

from envd.filesystem.service import FilesystemService

__all__ = ["FilesystemService"]
