"""Daemon configuration: what the CLI sets at start-up and `/init` may change later."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field

ENVD_PORT = 49983
CODE_INTERPRETER_PORT = 49999

#: Variables the daemon sets itself; `/init` can never overwrite them (docs/envd-api.md §2.4).
INTERNAL_ENVS = {"E2B_SANDBOX": "true"}


def pick_default_user(requested: str | None) -> str:
    """The user a request acts as when it names none.

    `user` (E2B's template account) when it exists and we run as root,
    otherwise whoever runs the daemon, so a non-root quickstart just works.
    """
    if requested:
        return requested
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("user")
            return "user"
        except KeyError:
            pass
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class Config:
    """Mutable runtime configuration shared by every handler."""

    host: str = "0.0.0.0"
    port: int = ENVD_PORT
    code_port: int = CODE_INTERPRETER_PORT
    code_interpreter: bool = True
    default_user: str = ""
    default_workdir: str = ""
    access_token: str = ""
    user_envs: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    unix_socket: str = ""
    head_timeout: float = 30.0  # seconds a new connection has to send its first request
    max_idle_connections: int = 512  # kept-alive connections between requests, longest idle closed first

    @property
    def single_port(self) -> bool:
        """Both APIs on one port (tests, `E2B_SANDBOX_URL` set-ups)."""
        return self.code_interpreter and self.port == self.code_port

    def global_envs(self) -> dict[str, str]:
        """User entries overlaid by internal ones, which always win (docs/envd-api.md §2.4)."""
        return {**self.user_envs, **INTERNAL_ENVS}
