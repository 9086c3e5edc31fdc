"""`envd-controlplane`: the local control plane and proxy; every flag has an env var."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from controlplane.app import run
from controlplane.config import DEFAULT_TEMPLATE_NAMES, Settings, Template
from controlplane.templates import TemplateFileError, load_templates


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"ENVD_CP_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="envd-controlplane",
        description="Local E2B-compatible control plane: REST API and sandbox proxy over Docker or Podman.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host", default=_env("HOST", "127.0.0.1,::1"), help="listen addresses, comma-separated [ENVD_CP_HOST]"
    )
    parser.add_argument(
        "--api-port",
        type=int,
        default=int(_env("API_PORT", "3000")),
        help="REST API port, for E2B_API_URL [ENVD_CP_API_PORT]",
    )
    parser.add_argument(
        "--proxy-port",
        type=int,
        default=int(_env("PROXY_PORT", "3001")),
        help="sandbox traffic port, for E2B_SANDBOX_URL [ENVD_CP_PROXY_PORT]",
    )
    parser.add_argument(
        "--tls-port",
        type=int,
        default=int(_env("TLS_PORT", "3443")),
        help="domain mode over TLS (0: off): API at api.<domain>, sandboxes at <port>-<id>.<domain> [ENVD_CP_TLS_PORT]",
    )
    parser.add_argument(
        "--domain",
        default=_env("DOMAIN", "e2b.localhost"),
        help="domain of domain mode; E2B_DOMAIN is <domain>:<tls port> [ENVD_CP_DOMAIN]",
    )
    parser.add_argument(
        "--engine-url",
        default=_env("ENGINE_URL"),
        help="Docker Engine API URL; default DOCKER_HOST, then Docker's or Podman's socket [ENVD_CP_ENGINE_URL]",
    )
    parser.add_argument(
        "--state-dir",
        default=_env("STATE_DIR", "/var/lib/envd-controlplane"),
        help="records and per-sandbox ingress sockets (mode 0700) [ENVD_CP_STATE_DIR]",
    )
    parser.add_argument(
        "--image",
        default=_env("IMAGE", "localhost/envd:latest"),
        help="image of the default templates (base, code-interpreter-v1) [ENVD_CP_IMAGE]",
    )
    parser.add_argument(
        "--template",
        action="append",
        default=[t for t in _env("TEMPLATES").split(",") if t],
        metavar="NAME=IMAGE",
        help="another template, repeatable [ENVD_CP_TEMPLATES=a=img,b=img]",
    )
    parser.add_argument(
        "--templates-file",
        default=_env("TEMPLATES_FILE"),
        metavar="PATH",
        help="TOML with [[templates]] tables (id, image, aliases, limits, pool_size); "
        "replaces the default template; --template adds to it [ENVD_CP_TEMPLATES_FILE]",
    )
    parser.add_argument(
        "--api-keys-file",
        default=_env("API_KEYS_FILE"),
        metavar="PATH",
        help="lines of 'KEY TEAM'; E2B_API_KEY must be one of the keys [ENVD_CP_API_KEYS_FILE]",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=int(_env("POOL_SIZE", "1")),
        help="warm containers kept per template (0: none) [ENVD_CP_POOL_SIZE]",
    )
    parser.add_argument(
        "--team-limit",
        type=int,
        default=int(_env("TEAM_LIMIT", "20")),
        help="running and paused sandboxes per team; past it create answers 429 [ENVD_CP_TEAM_LIMIT]",
    )
    parser.add_argument(
        "--host-limit",
        type=int,
        default=int(_env("HOST_LIMIT", "50")),
        help="containers this instance runs, warm pool included; past it create answers 503 "
        "(the SDK retries) [ENVD_CP_HOST_LIMIT]",
    )
    parser.add_argument(
        "--instance-id",
        default=_env("INSTANCE_ID", "envd-controlplane"),
        help="label of the containers this instance owns [ENVD_CP_INSTANCE_ID]",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="[ENVD_CP_LOG_LEVEL]")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.templates_file:
        try:
            templates = load_templates(args.templates_file)
        except TemplateFileError as exc:
            sys.exit(f"envd-controlplane: --templates-file {exc}")
    else:
        templates = [Template(id="local-envd", image=args.image, aliases=DEFAULT_TEMPLATE_NAMES)]
    for item in args.template:
        name, sep, image = item.partition("=")
        if not sep or not name or not image:
            sys.exit(f"envd-controlplane: --template expects NAME=IMAGE, got {item!r}")
        templates.append(Template(id=name, image=image))
    return Settings(
        hosts=tuple(h.strip() for h in args.host.split(",") if h.strip()),
        tls_port=args.tls_port,
        domain=args.domain,
        api_port=args.api_port,
        proxy_port=args.proxy_port,
        engine_url=args.engine_url,
        state_dir=args.state_dir,
        api_keys=_api_keys(args.api_keys_file),
        templates=templates,
        instance_id=args.instance_id,
        pool_size=max(0, args.pool_size),
        team_limit=max(1, args.team_limit),
        host_limit=max(1, args.host_limit),
    )


def _api_keys(path: str) -> dict[str, str]:
    """`KEY TEAM` per line (the team defaults to the key); else E2B_API_KEY as one team."""
    keys: dict[str, str] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                for line in file:
                    fields = line.split()
                    if fields and not fields[0].startswith("#"):
                        keys[fields[0]] = fields[1] if len(fields) > 1 else fields[0]
        except OSError as exc:
            sys.exit(f"envd-controlplane: cannot read --api-keys-file: {exc}")
    elif os.environ.get("E2B_API_KEY"):
        keys[os.environ["E2B_API_KEY"]] = "default"
    if not keys:
        sys.exit("envd-controlplane: no API key: pass --api-keys-file or set E2B_API_KEY")
    return keys


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _runner()(run(settings_from_args(args)))


def _runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop when installed (the `controlplane` extra brings it): the proxy is one more
    HTTP hop in Python on every sandbox request, and uvloop makes that hop cheaper.
    ENVD_CP_UVLOOP=0 keeps asyncio's own loop."""
    if _env("UVLOOP", "1") != "0":
        try:
            import uvloop

            return uvloop.run
        except ImportError:
            pass
    return asyncio.run
