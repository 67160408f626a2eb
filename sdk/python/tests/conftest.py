"""Fixtures: a real hub per test, and spokes and clients that are closed afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FAST
from hubproc import Hub, binary_candidates, find_binary

from alkhub import Client, Spoke


@pytest.fixture(scope="session")
def hub_binary() -> Path:
    binary = find_binary()
    if binary is None:
        tried = ", ".join(str(path) for path in binary_candidates())
        pytest.fail(
            f"no alkhub binary (looked for {tried}): set ALKHUB_BIN to one, or build "
            "the hub (cargo build) so that $CARGO_TARGET_DIR/debug/alkhub or "
            "../../target/debug/alkhub exists",
            pytrace=False,
        )
    return binary


@pytest.fixture
def make_hub(hub_binary: Path, tmp_path: Path) -> Iterator[Callable[[str], Hub]]:
    """Starts hubs with extra configuration (TOML text); stops them at the end."""
    hubs: list[Hub] = []

    def make(config: str = "") -> Hub:
        directory = tmp_path / f"hub{len(hubs)}"
        directory.mkdir()
        hub = Hub(hub_binary, directory, config)
        hubs.append(hub)
        hub.start()
        return hub

    yield make
    for hub in hubs:
        hub.stop()


@pytest.fixture
def hub(make_hub: Callable[[str], Hub]) -> Hub:
    """A hub with the default configuration."""
    return make_hub("")


class Peers:
    """Makes spokes and clients of a hub (principals included) and closes them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._spokes: list[Spoke] = []
        self._clients: list[Client] = []
        self._tokens: dict[tuple[str, str], str] = {}

    async def spoke_token(self, name: str) -> str:
        if ("spoke", name) not in self._tokens:
            self._tokens[("spoke", name)] = await asyncio.to_thread(self.hub.add_spoke, name)
        return self._tokens[("spoke", name)]

    async def client_token(self, name: str, scopes: tuple[str, ...] = ()) -> str:
        if ("client", name) not in self._tokens:
            self._tokens[("client", name)] = await asyncio.to_thread(
                self.hub.add_client, name, scopes
            )
        return self._tokens[("client", name)]

    async def spoke(self, name: str = "edge", **options: Any) -> Spoke:
        """A spoke (not started yet) with fast reconnects."""
        options.setdefault("reconnect", FAST)
        spoke = Spoke(self.hub.http_url, await self.spoke_token(name), **options)
        self._spokes.append(spoke)
        return spoke

    async def client(self, name: str = "app", scopes: tuple[str, ...] = (), **options: Any) -> Client:
        """A connected client."""
        client = Client(self.hub.http_url, await self.client_token(name, scopes), **options)
        await client.connect()
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for spoke in self._spokes:
            await spoke.close()


@pytest.fixture
async def peers(hub: Hub) -> AsyncIterator[Peers]:
    peers = Peers(hub)
    yield peers
    await peers.close()
