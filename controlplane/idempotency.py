"""Idempotent create: one `Idempotency-Key` (per team) makes one sandbox.

SDK 2.x retries a create on 502/503/504 and replays the caller's key, so the
answer to a key is remembered for `KEEP_SECONDS`: the same key with the same
body gets the same `201` body (tokens included), also while the first request
is still running (it waits for it); the same key with another body is `409`.
Answers are kept in the store, so a control-plane restart forgets none.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from controlplane.records import Store

KEEP_SECONDS = 600
KEY = re.compile(r"[a-z0-9-]{1,255}")

Answer = dict[str, Any]


class KeyMismatch(Exception):
    """The key was used before with a different body."""


class IdempotentCreates:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._running: dict[tuple[str, str], asyncio.Future[Answer]] = {}

    async def once(self, team: str, key: str, body: dict[str, Any], create: Callable[[], Awaitable[Answer]]) -> Answer:
        """`create()`'s answer for this key: made now, or the one made before."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        while True:
            known = self._store.idempotent_answer(team, key, time.time() - KEEP_SECONDS)
            if known is not None:
                if known[0] != digest:
                    raise KeyMismatch(key)
                return known[1]
            running = self._running.get((team, key))
            if running is None:
                break
            try:
                await asyncio.shield(running)
            except Exception:
                pass  # the first attempt failed: nothing was kept, so try ourselves
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._running[(team, key)] = future
        try:
            answer = await create()
            self._store.keep_idempotent_answer(team, key, digest, answer, time.time())
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved: waiting duplicates see it, nobody else must
            raise
        finally:
            del self._running[(team, key)]
