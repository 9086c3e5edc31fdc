"""`GET /files` and `POST /files` (placeholder until implemented)."""

from aiohttp import web

from envd.config import Config


class FileRoutes:
    def __init__(self, config: Config) -> None:
        self.config = config

    def routes(self) -> list[web.RouteDef]:
        return []
