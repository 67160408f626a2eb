"""The examples, run as their users would: child processes against a real hub."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Peers
from helpers import wait
from hubproc import SDK_DIR

from alkhub import HubError

EXAMPLES = SDK_DIR / "examples"


async def start_example(
    script: str, token: str, url: str, *args: str
) -> asyncio.subprocess.Process:
    """Starts an example spoke and waits for its `ready` line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args,
        env={**os.environ, "ALKHUB_URL": url, "ALKHUB_TOKEN": token},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    while True:
        line = await wait(process.stdout.readline(), timeout=60)
        if not line:
            raise AssertionError(f"{script} exited before `ready` (code {await process.wait()})")
        if line.strip() == b"ready":
            return process


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.terminate()
    code: int = await wait(process.wait())
    return code


@pytest.fixture
async def echo_spoke(peers: Peers) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await start_example(
        "echo_spoke.py", await peers.spoke_token("echo"), peers.hub.http_url
    )
    yield process
    await stop(process)


async def test_echo_spoke_and_client_examples(peers: Peers, echo_spoke: asyncio.subprocess.Process) -> None:
    client = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / "client.py"),
        env={**os.environ, "ALKHUB_URL": peers.hub.http_url,
             "ALKHUB_TOKEN": await peers.client_token("app")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await wait(client.communicate(), timeout=60)
    assert client.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        '{"hello":"world"}', '{"tick":1}', '{"tick":2}', '{"tick":3}',
    ]
    # The default ticks: five of them.
    caller = await peers.client("other")
    assert [e async for e in caller.subscribe("demo.ticks", {"everyMs": 1})] == [
        {"tick": i} for i in range(1, 6)
    ]
    assert await stop(echo_spoke) == 0


async def test_folder_spoke_serves_the_folder_and_nothing_else(
    peers: Peers, tmp_path: Path
) -> None:
    folder = tmp_path / "shared"
    (folder / "sub").mkdir(parents=True)
    (folder / "hello.txt").write_text("hello\n")
    (folder / "sub" / "data.bin").write_bytes(b"\xff\x00\x01")
    (tmp_path / "secret.txt").write_text("do not read")
    (folder / "inside-link.txt").symlink_to(folder / "hello.txt")
    (folder / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "escape-dir").symlink_to(tmp_path)

    process = await start_example(
        "folder_spoke.py", await peers.spoke_token("files"), peers.hub.http_url,
        str(folder), "--namespace", "shared",
    )
    try:
        client = await peers.client("app")
        listing = await wait(client.call("shared.list", {}))
        assert listing["path"] == "."
        assert [(e["name"], e["type"]) for e in listing["entries"]] == [
            ("escape-dir", "symlink"), ("escape.txt", "symlink"), ("hello.txt", "file"),
            ("inside-link.txt", "symlink"), ("sub", "dir"),
        ]
        sub = await wait(client.call("shared.list", {"path": "sub"}))
        assert [e["name"] for e in sub["entries"]] == ["data.bin"]

        text = await wait(client.call("shared.read", {"path": "hello.txt"}))
        assert (text["content"], text["encoding"], text["size"]) == ("hello\n", "utf-8", 6)
        assert (await wait(client.call("shared.read", {"path": "inside-link.txt"})))["content"] == "hello\n"
        binary = await wait(client.call("shared.read", {"path": "sub/data.bin"}))
        assert (binary["content"], binary["encoding"]) == ("/wAB", "base64")

        for path in ["../secret.txt", "sub/../../secret.txt", str(tmp_path / "secret.txt"),
                     "escape.txt", "escape-dir/secret.txt"]:
            with pytest.raises(HubError) as refused:
                await wait(client.call("shared.read", {"path": path}))
            assert refused.value.code == "OUTSIDE_FOLDER", path
        for path in ["..", "escape-dir", "/"]:
            with pytest.raises(HubError) as refused:
                await wait(client.call("shared.list", {"path": path}))
            assert refused.value.code == "OUTSIDE_FOLDER", path

        with pytest.raises(HubError) as missing:
            await wait(client.call("shared.read", {"path": "nothing.txt"}))
        assert missing.value.code == "NOT_FOUND"
        with pytest.raises(HubError) as directory:
            await wait(client.call("shared.read", {"path": "sub"}))
        assert directory.value.code == "NOT_A_FILE"
    finally:
        assert await stop(process) == 0
