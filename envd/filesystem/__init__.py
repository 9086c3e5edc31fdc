"""filesystem.Filesystem service: stat, list, make, move, remove and watch (spec envd.md 3)."""

from envd.filesystem.service import FilesystemService

__all__ = ["FilesystemService"]
