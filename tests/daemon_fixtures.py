"""The daemon end to end: `registry-canary run` as a child process, a real Prometheus scraping it,
and a proxy in front of the real registry that holds chosen requests to make a pull slow.

Every wait here polls against a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from canary.testbed import free_port
from tests.conftest import REPO_ROOT
from tests.loopback import START_SECONDS, STOP_SECONDS, ManagedServer, ThreadedServer, http_get

T = TypeVar("T")

PROMETHEUS_BINARY = "prometheus"
# Distinct from the daemon's defaults so a test can see the file's values were used.
DEFAULTS = {"interval": "1s", "timeout": "10s", "recheck_delay": "100ms"}


def eventually(check: Callable[[], T], timeout: float, poll: float = 0.1) -> T:
    """Call `check` until it returns without an AssertionError; re-raise the last one at the
    deadline, so a failure shows what was last seen rather than just "timed out"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(poll)


def equal(found: T, expected: object) -> T:
    """Raise AssertionError unless `found` equals `expected`; return the value. For checks
    passed to `eventually`."""
    assert found == expected, f"{found!r} != {expected!r}"
    return found


def at_least(value: float, wanted: float) -> float:
    """Raise AssertionError unless `value` is at least `wanted`; return the value. For checks
    passed to `eventually`."""
    assert value >= wanted, f"{value} < {wanted}"
    return value


def daemon_catalog(
    environments: list[dict[str, Any]],
    images: list[dict[str, Any]],
    daemon: dict[str, Any] | None = None,
    **defaults: Any,
) -> dict[str, Any]:
    """A config document for `run`: 1 s intervals, 10 s timeouts, 100 ms rechecks by default."""
    document: dict[str, Any] = {
        "defaults": {**DEFAULTS, **defaults},
        "environments": environments,
        "images": images,
    }
    if daemon:
        document["daemon"] = daemon
    return document


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's parser."""
    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


@dataclass
class DaemonProcess:
    """A running `python -m canary run`, its stdout (JSON lines) in a file."""

    config: Path
    port: int
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.url + path)

    def get_json(self, path: str) -> tuple[int, Any]:
        status, body = self.get(path)
        return status, json.loads(body)

    def metrics(self) -> list[Sample]:
        status, body = self.get("/metrics")
        assert status == 200, body
        return parse_exposition(body.decode())

    def raw_lines(self) -> list[str]:
        """The complete lines written to stdout so far (a line still being written is left out)."""
        text = self.stdout.read_text(encoding="utf-8")
        lines = text.split("\n")
        return lines[:-1]  # after the last newline: empty, or a line not yet finished

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw_lines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.logs() if line.get("event") == event]

    def diagnostics(self) -> str:
        out = self.stdout.read_text(encoding="utf-8")[-4000:]
        err = self.stderr.read_text(encoding="utf-8")[-4000:]
        return f"--- stdout (tail) ---\n{out}\n--- stderr (tail) ---\n{err}"

    def send(self, signum: signal.Signals) -> None:
        assert self.process.poll() is None, "the daemon is not running\n" + self.diagnostics()
        self.process.send_signal(signum)

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM and wait; kill only if it ignores that for `timeout` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_daemon(config: Path, directory: Path, name: str) -> DaemonProcess:
    """Start the daemon on a free loopback port; return once it has logged `started` and
    /healthz answers 200. A port taken between choosing and binding is retried."""
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        port = free_port()
        stdout = directory / f"{name}.{attempt}.stdout.log"
        stderr = directory / f"{name}.{attempt}.stderr.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "canary",
                    "run",
                    "--config",
                    str(config),
                    "--listen",
                    f"127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
                env=dict(os.environ),
            )
        daemon = DaemonProcess(config, port, process, stdout, stderr)
        if _wait_started(daemon):
            return daemon
        daemon.stop(timeout=5)
        if "address already in use" not in stderr.read_text(encoding="utf-8").lower():
            raise RuntimeError(f"the daemon did not start\n{daemon.diagnostics()}")
    raise RuntimeError("the daemon found no free port in 5 attempts")


def _wait_started(daemon: DaemonProcess) -> bool:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            return False
        # `started` is logged after the signal handlers are installed: signals are safe now.
        if any('"started"' in line for line in daemon.raw_lines()):
            with contextlib.suppress(OSError):
                if daemon.get("/healthz")[0] == 200:
                    return True
        time.sleep(0.05)
    return False


@dataclass
class DaemonFactory:
    """Writes a config and starts a daemon on it; stops every daemon it started at teardown."""

    directory: Path
    started: list[DaemonProcess] = field(default_factory=list)

    def config(self, name: str, document: dict[str, Any]) -> Path:
        path = self.directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def start(self, name: str, document: dict[str, Any]) -> DaemonProcess:
        daemon = start_daemon(self.config(name, document), self.directory, name)
        self.started.append(daemon)
        return daemon

    def stop_all(self) -> None:
        for daemon in self.started:
            daemon.stop()


@dataclass
class PrometheusServer(ManagedServer):
    """A real Prometheus with 1 s scrape and rule evaluation intervals; jobs are added by
    rewriting its config and asking it to reload (`--web.enable-lifecycle`). Rule files and
    Alertmanagers (base URLs), if given, are in the config from the start."""

    NAME = "Prometheus"

    jobs: dict[str, int] = field(default_factory=dict)
    rule_files: list[Path] = field(default_factory=list)
    alertmanagers: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "prometheus.yml"

    def _write_config(self) -> None:
        document: dict[str, Any] = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in self.jobs.items()
            ],
        }
        if self.alertmanagers:
            targets = [urllib.parse.urlsplit(url).netloc for url in self.alertmanagers]
            document["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def _command(self) -> list[str]:
        return [
            PROMETHEUS_BINARY,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]

    def scrape(self, job: str, port: int) -> None:
        """Scrape 127.0.0.1:`port` as `job` from now on, and wait until `up{job}` is 1."""
        self.jobs[job] = port
        self._write_config()
        request = urllib.request.Request(self.url + "/-/reload", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            assert response.status == 200

        def up() -> None:
            assert self.values(f'up{{job="{job}"}}') == [({"job": job}, 1.0)]

        eventually(up, timeout=15)

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query through the HTTP API: each series' labels and value."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url, timeout=10)
        document = json.loads(body)
        assert status == 200, document
        assert document["status"] == "success", document
        assert document["data"]["resultType"] == "vector", document
        return [(item["metric"], float(item["value"][1])) for item in document["data"]["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of the rules, pending or firing, through the HTTP API."""
        status, body = http_get(self.url + "/api/v1/alerts", timeout=10)
        document = json.loads(body)
        assert status == 200, document
        alerts: list[dict[str, Any]] = document["data"]["alerts"]
        return alerts

    def values(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """Like `query`, without `__name__` and `instance`, sorted by labels."""
        found = [
            ({k: v for k, v in labels.items() if k not in ("__name__", "instance")}, value)
            for labels, value in self.query(expr)
        ]
        return sorted(found, key=lambda item: sorted(item[0].items()))


def running_prometheus(
    root: Path, rule_files: list[Path] | None = None, alertmanagers: list[str] | None = None
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(root, rule_files=rule_files or [], alertmanagers=alertmanagers or [])
    server.start()
    try:
        yield server
    finally:
        server.stop()


class StallingProxy(ThreadedServer):
    """An HTTP proxy in front of a registry, on its own thread and event loop, that holds
    requests for the paths in `stall` for `stall_seconds` (or until closed) before forwarding.

    It records every request and the most requests it ever had open at once per path.
    """

    def __init__(self, upstream: str, stall: set[str], stall_seconds: float) -> None:
        super().__init__("stalling proxy")
        self.upstream = upstream
        self.stall_paths = stall
        self.stall_seconds = stall_seconds
        self.requests: list[tuple[str, str]] = []
        self.stalled_arrivals = 0
        self.stalled = threading.Event()  # a request to a stalled path has arrived
        self.max_open: dict[str, int] = {}
        self._open: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._release: asyncio.Event | None = None

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _setup(self) -> None:
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        await super()._setup()

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        assert self._release is not None
        path = request.path
        self.requests.append((request.method, path))
        self._open[path] = self._open.get(path, 0) + 1
        self.max_open[path] = max(self.max_open.get(path, 0), self._open[path])
        try:
            if path in self.stall_paths:
                self.stalled_arrivals += 1
                self.stalled.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), self.stall_seconds)
                if self._release.is_set():  # closing: the client has most likely gone
                    return web.Response(status=503)
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
            ) as upstream:
                body = await upstream.read()
                dropped = {"content-length", "transfer-encoding", "connection"}
                return web.Response(
                    status=upstream.status,
                    body=body,
                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in dropped},
                )
        finally:
            self._open[path] -= 1

    async def _shutdown(self) -> None:
        assert self._release is not None
        # Released first, stalled handlers answer at once rather than make the cleanup wait
        # out stall_seconds; the session goes last, as handlers forward through it until then.
        self._release.set()
        await super()._shutdown()
        if self._session is not None:
            await self._session.close()


def config_blob_path(registry_url: str, repository: str, tag: str) -> str:
    """The /v2/ path of the config blob of `repository:tag`, read from its manifest."""
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{registry_url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        manifest = json.loads(response.read())
    return f"/v2/{repository}/blobs/{manifest['config']['digest']}"
