"""process.Process service: commands and PTYs run as sandbox users (spec envd.md section 4)."""

from envd.process.service import ProcessService

__all__ = ["ProcessService"]
