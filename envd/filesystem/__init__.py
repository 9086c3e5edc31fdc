"""filesystem.Filesystem service (placeholder until implemented)."""

from envd.config import Config
from envd.connect import Rpc


class FilesystemService:
    def __init__(self, config: Config) -> None:
        self.config = config

    def rpcs(self) -> list[Rpc]:
        return []

    async def close(self) -> None:
        pass
