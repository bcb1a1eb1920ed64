"""Servers the end-to-end tests run on loopback: a real server binary as a child process
(`ManagedServer`), and an aiohttp server of the test's own on a thread of its own
(`ThreadedServer`).

Every wait here polls against a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from aiohttp import web

from canary.testbed import free_port

START_SECONDS = 20.0
STOP_SECONDS = 30.0
PORT_ATTEMPTS = 5


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url` (loopback only); the status and body, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class ManagedServer(abc.ABC):
    """A server binary (Prometheus, Alertmanager) on a free loopback port, its state and config
    under `root` and its output in `log`; ready once GET /-/ready answers 200."""

    NAME: ClassVar[str]  # in messages; lowercased, the log's name

    root: Path
    port: int = field(default=0, kw_only=True)
    process: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / f"{self.NAME.lower()}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abc.abstractmethod
    def _write_config(self) -> None:
        """Write the config the server reads at start, under `root`."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The argv that runs the server on `self.port`."""

    def start(self) -> None:
        """Start it and wait until /-/ready answers 200; a port taken between choosing and
        binding is retried, any other failure raises with the log's tail."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_config()
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            # One log per attempt, so that the port check below reads only this attempt's.
            self.log = self.root / f"{self.NAME.lower()}.{attempt}.log"
            with self.log.open("ab") as sink:
                self.process = subprocess.Popen(
                    self._command(),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_ready():
                return
            self.stop()
            if "address already in use" not in self.log.read_text(encoding="utf-8").lower():
                raise RuntimeError(f"{self.NAME} did not start\n{self.diagnostics()}")
        raise RuntimeError(f"{self.NAME} found no free port in {PORT_ATTEMPTS} attempts")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                if http_get(self.url + "/-/ready", timeout=1)[0] == 200:
                    return True
            time.sleep(0.05)
        return False

    def diagnostics(self) -> str:
        text = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
        return f"--- {self.log} (tail) ---\n{text[-4000:]}"

    def stop(self) -> None:
        """SIGTERM and wait; kill only if it ignores that for STOP_SECONDS."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ThreadedServer(abc.ABC):
    """An aiohttp server on a free loopback port, on its own thread and event loop, so that it
    answers while the test blocks. Subclasses add their routes in `_add_routes`, and may extend
    `_setup` and `_shutdown` (which run on that loop) calling the base's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=name.replace(" ", "-"), daemon=True
        )
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=START_SECONDS) or not self.port:
            raise RuntimeError(f"the {self.name} did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._setup())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    @abc.abstractmethod
    def _add_routes(self, app: web.Application) -> None:
        """Route the requests the server answers to its handlers."""

    async def _setup(self) -> None:
        app = web.Application()
        self._add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.port = int(address[1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def close(self) -> None:
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            future.result(timeout=STOP_SECONDS)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=STOP_SECONDS)
