"""Connecting to a sandbox's Unix socket without trusting the path.

Code in the sandbox may run as root and could swap the socket for a symlink
to a host path (the engine's own API socket, say), which a plain connect by
path would follow. So the socket is opened `O_PATH | O_NOFOLLOW`, checked to
be a socket, and connected to through `/proc/self/fd/<fd>` (which also avoids
the 108-byte `sun_path` limit). After a failed connect it is opened afresh.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable

import aiohttp

from controlplane.relay import ConnectionPool
from envd.http.forward import relay_session


class Ingress:
    """One sandbox's socket: a held descriptor, the proxy's connection pool over
    it, and a client session for the control plane's own calls (`/init`, `/health`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._session: aiohttp.ClientSession | None = None
        self.pool = ConnectionPool(self._connect)

    def _socket_path(self) -> str:
        """The socket as it is now, through a held descriptor; OSError if it is no socket."""
        if self._fd is None:
            fd = os.open(self.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{self.path} is not a socket")
            self._fd = fd
        return f"/proc/self/fd/{self._fd}"

    async def _connect(self, factory: Callable[[], asyncio.Protocol]) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        return await asyncio.get_running_loop().create_unix_connection(factory, self._socket_path())

    def session(self) -> aiohttp.ClientSession:
        """A session to the socket as it is now; raises OSError if it is no socket."""
        if self._session is None:
            self._session = relay_session(aiohttp.UnixConnector(path=self._socket_path(), limit=0))
        return self._session

    async def reset(self) -> None:
        """Forget the descriptor and every connection (a kill, a pause, a restart)."""
        self.pool.close()
        await self.reopen()

    async def reopen(self) -> None:
        """After a failed connect: open the socket afresh next time. The proxy's
        connections that work are kept (other clients' requests and tunnels)."""
        session, self._session = self._session, None
        fd, self._fd = self._fd, None
        if session is not None:
            await session.close()
        if fd is not None:
            os.close(fd)
