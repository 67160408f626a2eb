"""A spoke exposing one folder, read-only: `<ns>.list` and `<ns>.read`.

    ALKHUB_TOKEN=alk_spoke_... python examples/folder_spoke.py ./docs --namespace docs

`<ns>.list` takes {"path": "sub/dir"} (default: the folder itself) and lists
its entries; `<ns>.read` takes {"path": "file.txt"} and returns the file's
content (UTF-8 text, or base64 for other bytes). Paths are relative to the
folder; one that leads outside it, through `..`, an absolute path or a
symbolic link, is refused with the code OUTSIDE_FOLDER. `ALKHUB_URL` is the
hub's HTTP base URL (default http://127.0.0.1:7700). Prints `ready` once
the hub has welcomed the spoke.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

from alkhub import CallContext, HubError, Spoke

MAX_READ_BYTES = 512 * 1024  # well under the hub's 1 MiB frame limit

PATH_INPUT = {
    "type": "object",
    "properties": {"path": {"type": "string", "maxLength": 4096}},
    "additionalProperties": False,
}


class Folder:
    """Read-only access to the files below ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve(strict=True)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{root} is not a folder")

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` (relative to the folder), symbolic links followed.

        Raises OUTSIDE_FOLDER when it is not the folder or below it.
        """
        try:
            target = (self.root / path).resolve()
        except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL byte
            raise HubError("INVALID_PATH", f"{path!r} cannot be resolved: {e}") from None
        if target != self.root and not target.is_relative_to(self.root):
            raise HubError("OUTSIDE_FOLDER", f"{path!r} is outside the folder")
        return target

    def relative(self, target: Path) -> str:
        return target.relative_to(self.root).as_posix() or "."

    def list(self, path: str) -> dict[str, Any]:
        target = self.resolve(path)
        if not target.exists():
            raise HubError("NOT_FOUND", f"{path!r} does not exist")
        if not target.is_dir():
            raise HubError("NOT_A_DIRECTORY", f"{path!r} is not a folder")
        entries = []
        for entry in sorted(os.scandir(target), key=lambda e: e.name):
            info = entry.stat(follow_symlinks=False)
            kind = (
                "symlink" if stat.S_ISLNK(info.st_mode)
                else "dir" if stat.S_ISDIR(info.st_mode)
                else "file" if stat.S_ISREG(info.st_mode)
                else "other"
            )
            entries.append({"name": entry.name, "type": kind, "size": info.st_size})
        return {"path": self.relative(target), "entries": entries}

    def read(self, path: str) -> dict[str, Any]:
        target = self.resolve(path)
        try:
            # O_NOFOLLOW: a link swapped in after the check above is refused;
            # O_NONBLOCK: a named pipe does not block the open.
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise HubError("NOT_FOUND", f"{path!r} does not exist") from None
        except OSError as e:
            raise HubError("NOT_READABLE", f"{path!r} cannot be read: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise HubError("NOT_A_FILE", f"{path!r} is not a file")
        with os.fdopen(fd, "rb") as file:
            content = file.read(MAX_READ_BYTES + 1)
        if len(content) > MAX_READ_BYTES:
            raise HubError("TOO_LARGE", f"{path!r} is larger than {MAX_READ_BYTES} bytes")
        try:
            text, encoding = content.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(content).decode("ascii"), "base64"
        return {
            "path": self.relative(target),
            "size": len(content),
            "encoding": encoding,
            "content": text,
        }


def build(url: str, token: str, folder: Folder, namespace: str) -> Spoke:
    spoke = Spoke(url, token, name=f"folder {namespace}")

    def path_of(input: Any) -> str:
        return str(input.get("path", ".")) if isinstance(input, dict) else "."

    @spoke.query(f"{namespace}.list", description="Lists a folder.", input_schema=PATH_INPUT)
    async def list_folder(input: Any, ctx: CallContext) -> dict[str, Any]:
        return await asyncio.to_thread(folder.list, path_of(input))

    @spoke.query(
        f"{namespace}.read",
        description="Reads a file (UTF-8 text, or base64).",
        input_schema={**PATH_INPUT, "required": ["path"]},
    )
    async def read_file(input: Any, ctx: CallContext) -> dict[str, Any]:
        return await asyncio.to_thread(folder.read, path_of(input))

    return spoke


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--namespace", default="files")
    args = parser.parse_args()
    token = os.environ.get("ALKHUB_TOKEN")
    if not token:
        print("set ALKHUB_TOKEN to a spoke token", file=sys.stderr)
        return 2
    url = os.environ.get("ALKHUB_URL", "http://127.0.0.1:7700")
    spoke = build(url, token, Folder(args.folder), args.namespace)
    await spoke.start()
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
