"""Helpers of the tests: quick reconnects, polling with a deadline, bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from alkhub import Backoff

# Quick reconnects, so the tests do not wait on the default backoff.
FAST = Backoff(initial=0.05, maximum=0.5)


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Awaits ``probe()`` until it returns without raising; re-raises after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await probe()
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


async def wait(awaitable: Awaitable[Any], timeout: float = 30.0) -> Any:
    """``awaitable`` with a generous timeout, so a broken test fails instead of hanging."""
    return await asyncio.wait_for(awaitable, timeout)
