"""A spoke serving `demo.echo` (a query returning its input) and `demo.ticks`
(a subscription counting to `input.count`, one tick every `input.everyMs` ms).

    ALKHUB_TOKEN=alk_spoke_... python examples/echo_spoke.py

`ALKHUB_URL` is the hub's HTTP base URL (default http://127.0.0.1:7700).
Prints `ready` once the hub has welcomed the spoke; stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from alkhub import CallContext, HubError, Spoke

TICKS_INPUT = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 1000},
        "everyMs": {"type": "integer", "minimum": 1},
    },
}


def build(url: str, token: str) -> Spoke:
    spoke = Spoke(url, token, name="echo example")

    @spoke.query("demo.echo", description="Returns its input.")
    async def echo(input: Any, ctx: CallContext) -> Any:
        return input

    @spoke.subscription(
        "demo.ticks",
        description="Counts to input.count, one tick every input.everyMs ms.",
        input_schema=TICKS_INPUT,
    )
    async def ticks(input: Any, ctx: CallContext) -> AsyncIterator[dict[str, int]]:
        options = input if isinstance(input, dict) else {}
        count = options.get("count", 5)
        every = options.get("everyMs", 200) / 1000
        for i in range(1, count + 1):
            yield {"tick": i}
            await asyncio.sleep(every)

    return spoke


async def main() -> int:
    token = os.environ.get("ALKHUB_TOKEN")
    if not token:
        print("set ALKHUB_TOKEN to a spoke token", file=sys.stderr)
        return 2
    spoke = build(os.environ.get("ALKHUB_URL", "http://127.0.0.1:7700"), token)
    welcome = await spoke.start()
    for r in welcome.registrations:
        print(f"serving {r.operation_id} (declared as {r.pre_remap_id})", file=sys.stderr)
    for rejected in welcome.rejected:
        print(f"rejected {rejected.operation_id}: {rejected.code} {rejected.message}", file=sys.stderr)
    print("ready", flush=True)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(spoke.close()))
    await spoke.wait_closed()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except HubError as e:  # a bad token, a newer session of this spoke, ...
        print(f"stopped: {e.code}: {e.message}", file=sys.stderr)
        sys.exit(1)
