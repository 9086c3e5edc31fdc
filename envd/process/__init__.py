"""process.Process service: commands and PTYs run as sandbox users (docs/envd-api.md §5)."""

from envd.process.service import ProcessService

__all__ = ["ProcessService"]
