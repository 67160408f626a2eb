"""A real alkhub hub in a child process, on a free loopback port and a fresh SQLite file.

The binary comes from ``ALKHUB_BIN``, else ``$CARGO_TARGET_DIR/debug/alkhub``,
else ``../../target/debug/alkhub`` relative to ``sdk/python``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

SDK_DIR = Path(__file__).resolve().parent.parent


def binary_candidates() -> list[Path]:
    """Where the hub binary is looked for, in order."""
    if os.environ.get("ALKHUB_BIN"):
        return [Path(os.environ["ALKHUB_BIN"])]
    candidates = []
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "alkhub")
    candidates.append(SDK_DIR.parent.parent / "target" / "debug" / "alkhub")
    return candidates


def find_binary() -> Path | None:
    """The hub binary to test against, or None when there is none."""
    for path in binary_candidates():
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


class Hub:
    """One hub process: principals through its CLI, then ``serve``; restartable."""

    def __init__(self, binary: Path, directory: Path, config: str = "") -> None:
        self.binary = binary
        self.dir = directory
        self.database_url = f"sqlite://{directory / 'hub.db'}"
        self.config_path = directory / "alkhub.toml"
        # Short shutdown periods keep the tests quick; the rest is the caller's.
        self.config_path.write_text(
            "[server]\nshutdown_grace_ms = 500\nshutdown_hard_ms = 1000\n\n"
            f"[plugins]\ncache_dir = {json.dumps(str(directory / 'cache'))}\n\n{config}"
        )
        (directory / "plugins").mkdir(exist_ok=True)
        self.log_path = directory / "hub.log"
        self.addr: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []

    @property
    def http_url(self) -> str:
        """The hub's HTTP base URL."""
        assert self.addr is not None, "the hub is not running"
        return f"http://{self.addr}"

    def cli(self, *args: str) -> str:
        """Runs ``alkhub ARGS --database-url ... --config ...``; returns its stdout."""
        result = subprocess.run(
            [str(self.binary), *args, "--database-url", self.database_url,
             "--config", str(self.config_path)],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"alkhub {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def add_spoke(self, name: str, *, provides: str | None = None) -> str:
        """Creates a spoke; returns its token (the last line the CLI prints)."""
        args = ["spoke", "add", name] + (["--provides", provides] if provides else [])
        return self.cli(*args).strip().splitlines()[-1]

    def add_client(self, name: str, scopes: tuple[str, ...] = ()) -> str:
        """Creates a client with ``scopes``; returns its token."""
        args = ["client", "add", name] + (["--scopes", ",".join(scopes)] if scopes else [])
        return self.cli(*args).strip().splitlines()[-1]

    def start(self, listen: str = "127.0.0.1:0", timeout: float = 60.0) -> None:
        """Spawns ``alkhub serve`` and waits for its ``alkhub listening`` log line."""
        self._process = subprocess.Popen(
            [str(self.binary), "serve", "--database-url", self.database_url,
             "--listen", listen, "--log-format", "json",
             "--plugins-dir", str(self.dir / "plugins"), "--config", str(self.config_path)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info"},
        )
        listening = threading.Event()
        found: list[str] = []
        threading.Thread(
            target=self._drain, args=(self._process, listening, found), daemon=True
        ).start()
        if not listening.wait(timeout) or not found:
            self.stop()
            raise RuntimeError(
                f"the hub did not report `alkhub listening` within {timeout} s; "
                f"its log:\n{self.log_tail()}"
            )
        self.addr = found[0]

    def _drain(
        self, process: subprocess.Popen[str], listening: threading.Event, found: list[str]
    ) -> None:
        # Reads stderr to its end, so the pipe never fills.
        assert process.stderr is not None
        with self.log_path.open("a") as log:
            for line in process.stderr:
                log.write(line)
                log.flush()
                self._lines.append(line.rstrip("\n"))
                if not listening.is_set():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("message") == "alkhub listening":
                        found.append(str(record["addr"]))
                        listening.set()
        listening.set()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)

    def restart(self, attempts: int = 20) -> None:
        """Stops the hub and starts it again on the same address and database."""
        assert self.addr is not None
        addr = self.addr
        self.stop()
        for attempt in range(attempts):
            try:
                self.start(listen=addr)
                return
            except RuntimeError:
                # The port may not be free again yet.
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the hub logged."""
        return "\n".join(self._lines[-lines:])
