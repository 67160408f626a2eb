"""A client calling the echo spoke's operations (run examples/echo_spoke.py first).

    ALKHUB_TOKEN=alk_client_... python examples/client.py

Calls `demo.echo` with {"hello": "world"} and prints the result as one JSON
line, then subscribes to `demo.ticks` with {"count": 3, "everyMs": 10} and
prints each event as one JSON line. `ALKHUB_URL` is the hub's HTTP base URL
(default http://127.0.0.1:7700).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from alkhub import Client, HubError


def line(value: Any) -> None:
    print(json.dumps(value, separators=(",", ":")), flush=True)


async def main() -> int:
    token = os.environ.get("ALKHUB_TOKEN")
    if not token:
        print("set ALKHUB_TOKEN to a client token", file=sys.stderr)
        return 2
    try:
        async with Client(os.environ.get("ALKHUB_URL", "http://127.0.0.1:7700"), token) as client:
            line(await client.call("demo.echo", {"hello": "world"}))
            async for event in client.subscribe("demo.ticks", {"count": 3, "everyMs": 10}):
                line(event)
    except HubError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
