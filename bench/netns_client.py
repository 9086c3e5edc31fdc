"""The proxy benchmark's baseline client, run inside a sandbox's network namespace.

`nsenter --net=/proc/<container pid>/ns/net python -m bench.netns_client ...`
reaches the daemon on its own loopback TCP ports, as the SDK does in debug
mode: the same client and requests as through the proxy, minus the proxy.
Prints one JSON line: RTT samples in ms, or a download rate in MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp

from bench.controlplane import download_rate, execute_rtts


async def _measure(args: argparse.Namespace) -> dict:
    headers = {"X-Access-Token": args.token}
    async with aiohttp.ClientSession() as session:
        if args.download:
            return {"rate": await download_rate(session, "http://127.0.0.1:49983", headers)}
        return {"samples": await execute_rtts(session, "http://127.0.0.1:49999", headers, args.rtt)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netns_client")
    parser.add_argument("--token", default="")
    parser.add_argument("--rtt", type=int, default=0, help="this many run_code round trips")
    parser.add_argument("--download", action="store_true", help="one 1 GB download of /tmp/big.bin")
    print(json.dumps(asyncio.run(_measure(parser.parse_args()))))


if __name__ == "__main__":
    main()
