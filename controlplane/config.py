"""What the control plane is told at start: listeners, engine, keys, templates."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

ID_ALPHABET = string.ascii_lowercase + string.digits
DEFAULT_TIMEOUT = 300
MAX_TIMEOUT = 24 * 3600
#: The SDKs' default template names: both map to the one image (it serves both APIs).
DEFAULT_TEMPLATE_NAMES = ("base", "code-interpreter-v1")


def random_id(length: int) -> str:
    """Ids and client ids: `[a-z0-9]`, no `-` (host routing splits on it)."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class Template:
    """A name the SDK asks for, and the local image behind it (never pulled)."""

    id: str
    image: str
    aliases: tuple[str, ...] = ()
    cpu_count: int = 2
    memory_mb: int = 1024
    disk_size_mb: int = 10240  # reported, not enforced
    pids_limit: int = 4096
    default_user: str = "user"
    default_workdir: str = "/home/user"
    pool_size: int | None = None  # warm containers of this template; None: the instance's --pool-size

    def answers_to(self, name: str) -> bool:
        return name == self.id or name in self.aliases


@dataclass
class Settings:
    hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    api_port: int = 3000
    proxy_port: int = 3001
    #: Domain mode: `https://api.<domain>` and `https://<port>-<id>.<domain>` on
    #: `tls_port` (0: off). The SDKs get `<domain>:<tls_port>` as E2B_DOMAIN.
    domain: str = "e2b.localhost"
    tls_port: int = 3443
    engine_url: str = ""
    state_dir: str = "/var/lib/envd-controlplane"
    api_keys: dict[str, str] = field(default_factory=dict)  # key -> team
    templates: list[Template] = field(default_factory=list)
    max_timeout: int = MAX_TIMEOUT
    #: Warm containers per template, started and healthy, claimed by create.
    pool_size: int = 1
    #: Running and paused sandboxes a team may have at once (429 past it).
    team_limit: int = 20
    #: Containers this instance runs at most, warm pool included (503 past it).
    host_limit: int = 50
    #: Labels every container this instance manages; reconciled at start.
    instance_id: str = "envd-controlplane"
    #: SDK 1.x builds ids as `<sandboxID>-<clientID>`: one constant per instance.
    client_id: str = field(default_factory=lambda: random_id(8))

    @property
    def public_domain(self) -> str | None:
        """What create answers as `domain`: where `get_host()` names point."""
        return f"{self.domain}:{self.tls_port}" if self.tls_port else None

    def pool_size_of(self, template: Template) -> int:
        return self.pool_size if template.pool_size is None else template.pool_size

    def template(self, name: str) -> Template | None:
        return next((t for t in self.templates if t.answers_to(name)), None)
