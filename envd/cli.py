"""Command line: `envd [--port N] [--code-port N] ...`; every flag has an env var."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from envd import ENVD_PROTOCOL_VERSION, __version__
from envd.app import run
from envd.config import CODE_INTERPRETER_PORT, ENVD_PORT, Config, pick_default_user


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"ENVD_{name}", default)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where there is one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "", False, []):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="envd",
        description="E2B-compatible sandbox daemon: envd API and code interpreter. "
        "Every flag can also be set with the environment variable in brackets.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--host", default=_env("HOST", "0.0.0.0"), help="TCP bind address [ENVD_HOST]")
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(ENVD_PORT))), help="envd API port [ENVD_PORT]")
    parser.add_argument(
        "--code-port",
        type=int,
        default=int(_env("CODE_PORT", str(CODE_INTERPRETER_PORT))),
        help="code interpreter port; equal to --port serves both on one port [ENVD_CODE_PORT]",
    )
    parser.add_argument(
        "--default-user",
        default=_env("DEFAULT_USER"),
        metavar="NAME",
        help="user a request acts as when it names none; empty: `user` if it exists and "
        "envd runs as root, else whoever runs envd [ENVD_DEFAULT_USER]",
    )
    parser.add_argument(
        "--default-workdir",
        default=_env("DEFAULT_WORKDIR"),
        metavar="DIR",
        help="working directory of processes that name none; empty: the user's home [ENVD_DEFAULT_WORKDIR]",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[e for e in _env("ENVS").split(",") if e],
        metavar="K=V",
        help="global env var for every process, repeatable [ENVD_ENVS=K=V,K2=V2]",
    )
    parser.add_argument(
        "--access-token",
        default=None,
        metavar="TOKEN",
        help="token every request must carry (none by default); prefer ENVD_ACCESS_TOKEN or --access-token-file, "
        "since a command line is visible to every local user [ENVD_ACCESS_TOKEN]",
    )
    parser.add_argument(
        "--access-token-file",
        default=_env("ACCESS_TOKEN_FILE"),
        metavar="PATH",
        help="read the access token from this file (trailing newline ignored) [ENVD_ACCESS_TOKEN_FILE]",
    )
    parser.add_argument(
        "--no-code-interpreter",
        action="store_true",
        default=_env("NO_CODE_INTERPRETER") not in ("", "0", "false"),
        help="serve the envd API only [ENVD_NO_CODE_INTERPRETER=1]",
    )
    parser.add_argument(
        "--unix-socket",
        default=_env("UNIX_SOCKET"),
        metavar="PATH",
        help="also serve on this Unix socket: both APIs, chosen by the E2b-Sandbox-Port header, "
        "and any other port forwarded to 127.0.0.1 inside; TCP then binds loopback only "
        "[ENVD_UNIX_SOCKET]",
    )
    parser.add_argument(
        "--head-timeout",
        type=float,
        default=float(_env("HEAD_TIMEOUT", "30")),
        metavar="SECONDS",
        help="close a new connection that has not sent a whole request head by then [ENVD_HEAD_TIMEOUT]",
    )
    parser.add_argument(
        "--max-idle-connections",
        type=int,
        default=int(_env("MAX_IDLE_CONNECTIONS", "512")),
        metavar="N",
        help="kept-alive connections allowed between requests; the longest idle are closed "
        "first [ENVD_MAX_IDLE_CONNECTIONS]",
    )
    parser.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING or ERROR [ENVD_LOG_LEVEL]",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"envd-py {__version__}, speaking the envd protocol of E2B's envd "
        f"{ENVD_PROTOCOL_VERSION} (the version /health and /metrics report to the SDKs)",
    )
    return parser.parse_args(argv)


def access_token(args: argparse.Namespace) -> str:
    """The token from the flag, the file or the environment, in that order."""
    if args.access_token is not None:
        logging.getLogger("envd").warning(
            "--access-token is readable by every local user (ps); use ENVD_ACCESS_TOKEN or --access-token-file instead"
        )
        return args.access_token
    if args.access_token_file:
        try:
            with open(args.access_token_file, encoding="utf-8") as file:
                return file.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            sys.exit(f"envd: cannot read --access-token-file: {exc}")
    return _env("ACCESS_TOKEN")


def config_from_args(args: argparse.Namespace) -> Config:
    envs = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"envd: --env expects K=V, got {item!r}")
        envs[key] = value
    host = args.host
    if args.unix_socket and host not in ("127.0.0.1", "::1", "localhost"):
        # The socket is the ingress; TCP on other addresses would bypass the proxy.
        logging.getLogger("envd").info("--unix-socket: binding TCP to 127.0.0.1, not %s", host)
        host = "127.0.0.1"
    return Config(
        host=host,
        port=args.port,
        code_port=args.code_port,
        code_interpreter=not args.no_code_interpreter,
        default_user=pick_default_user(args.default_user),
        default_workdir=args.default_workdir,
        access_token=access_token(args),
        user_envs=envs,
        log_level=args.log_level.upper(),
        unix_socket=args.unix_socket,
        head_timeout=args.head_timeout,
        max_idle_connections=args.max_idle_connections,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    os.umask(0o022)
    asyncio.run(run(config))
