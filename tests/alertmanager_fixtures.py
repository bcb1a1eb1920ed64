"""A real Alertmanager on loopback, a loopback stand-in for the services it notifies (PagerDuty's
Events API v2 and a ticket webhook), and the shipped config/alertmanager/alertmanager.yml
rewritten to deliver to that stand-in.

Typical use, in a test or a fixture::

    receiver = NotificationReceiver()
    receiver.start()
    config = shipped_config_for_test(receiver.url, tmp_path / "secrets")
    for alertmanager in running_alertmanager(tmp_path / "alertmanager", config):
        alertmanager.post_alerts([alert({...}, {...}, starts_at=now)])
        pages = receiver.wait_for(PAGERDUTY_PATH, 1, timeout=10)

Every wait here polls against a deadline; nothing sleeps and hopes. Nothing leaves loopback:
`shipped_config_for_test` refuses a config with a receiver it cannot point at the stand-in.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.conftest import REPO_ROOT
from tests.daemon_fixtures import eventually
from tests.loopback import ManagedServer, ThreadedServer, http_get

ALERTMANAGER_BINARY = "prometheus-alertmanager"  # the Debian package's name for `alertmanager`
AMTOOL_BINARY = "amtool"
SHIPPED_CONFIG = REPO_ROOT / "config" / "alertmanager" / "alertmanager.yml"

# What `shipped_config_for_test` sets instead of the shipped timers, and the routing key it
# writes (with a trailing newline, as `echo KEY > file` would) to the routing key files.
TEST_GROUP_WAIT_SECONDS = 1.0
TEST_GROUP_INTERVAL_SECONDS = 2.0
TEST_ROUTING_KEY = "test0routing0key0000000000000000"

# Paths of the stand-in receiver the rewritten config delivers to.
PAGERDUTY_PATH = "/pagerduty"
WEBHOOK_PATH = "/webhook"


def require_binary(name: str) -> str:
    """The path of `name` on PATH; a clear error, never a skip, when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not on PATH: install the Debian package prometheus-alertmanager "
            "(`make sysdeps` does)"
        )
    return path


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alert(
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    *,
    starts_at: datetime,
    ends_at: datetime | None = None,
    generator_url: str = "http://127.0.0.1/",
) -> dict[str, Any]:
    """One alert as POST /api/v2/alerts takes it. An `ends_at` in the past resolves it; an
    alert without one resolves after Alertmanager's resolve_timeout unless posted again."""
    document: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations or {},
        "startsAt": rfc3339(starts_at),
        "generatorURL": generator_url,
    }
    if ends_at is not None:
        document["endsAt"] = rfc3339(ends_at)
    return document


@dataclass
class AlertmanagerServer(ManagedServer):
    """A real Alertmanager on a free loopback port, with gossip off (`--cluster.listen-address=`)
    and its state in a temporary `--storage.path` under `root`."""

    NAME = "Alertmanager"

    config: dict[str, Any]

    @property
    def config_path(self) -> Path:
        return self.root / "alertmanager.yml"

    def _write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _command(self) -> list[str]:
        return [
            require_binary(ALERTMANAGER_BINARY),
            f"--config.file={self.config_path}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]

    def alerts(
        self, active_only: bool = True, matchers: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts Alertmanager holds that have not resolved.

        With `active_only` only those in state "active" (not inhibited, silenced or still
        unprocessed); without it every one, each with `status.state` and `status.inhibitedBy`.
        `matchers` such as `environment="prod"` filter them.
        """
        query: list[tuple[str, str]] = [("filter", matcher) for matcher in matchers]
        if active_only:
            query += [("silenced", "false"), ("inhibited", "false"), ("unprocessed", "false")]
        url = self.url + "/api/v2/alerts"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        status, body = http_get(url, timeout=10)
        assert status == 200, f"GET /api/v2/alerts: {status} {body!r}"
        found: list[dict[str, Any]] = json.loads(body)
        return found

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST /api/v2/alerts, as Prometheus and the daemon do; asserts it was accepted."""
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url + "/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                assert response.status == 200, response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"POST /api/v2/alerts: {exc.code} {exc.read()!r}") from exc


def running_alertmanager(root: Path, config: dict[str, Any]) -> Iterator[AlertmanagerServer]:
    """An Alertmanager running `config`, stopped when the generator is closed."""
    server = AlertmanagerServer(root, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class Notification:
    path: str
    body: Any  # the parsed JSON, or the text when it is not JSON
    received: float  # time.monotonic()


class NotificationReceiver(ThreadedServer):
    """A loopback HTTP server, on its own thread and event loop, that records the body of every
    POST by path. Under PAGERDUTY_PATH it answers as PagerDuty's Events API v2 does (202 and
    a JSON status); under any other path (such as WEBHOOK_PATH) with 200."""

    def __init__(self) -> None:
        super().__init__("notification receiver")
        self._notifications: list[Notification] = []
        self._lock = threading.Lock()

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        with self._lock:
            self._notifications.append(Notification(request.path, body, time.monotonic()))
        if request.path == PAGERDUTY_PATH:
            dedup_key = body.get("dedup_key") if isinstance(body, dict) else None
            answer = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
            return web.json_response(answer, status=202)
        return web.Response(text="ok")

    def notifications(self, path: str | None = None) -> list[Notification]:
        """Everything received so far, in order; only that posted to `path` if given."""
        with self._lock:
            return [n for n in self._notifications if path is None or n.path == path]

    def bodies(self, path: str) -> list[Any]:
        return [notification.body for notification in self.notifications(path)]

    def wait_for(self, path: str, count: int, timeout: float) -> list[Any]:
        """Poll until at least `count` bodies were posted to `path`; return all of them."""

        def arrived() -> list[Any]:
            bodies = self.bodies(path)
            assert len(bodies) >= count, (
                f"{len(bodies)} of {count} notifications to {path} within {timeout}s: {bodies}"
            )
            return bodies

        return eventually(arrived, timeout=timeout, poll=0.05)

    def expect_no_more(self, path: str, count: int, seconds: float) -> list[Any]:
        """Watch `path` for `seconds`, failing as soon as more than `count` bodies have been
        posted to it; return them."""
        deadline = time.monotonic() + seconds
        while True:
            bodies = self.bodies(path)
            assert len(bodies) <= count, (
                f"{len(bodies)} notifications to {path}, expected {count}: {bodies}"
            )
            if time.monotonic() >= deadline:
                return bodies
            time.sleep(0.05)


def running_receiver() -> Iterator[NotificationReceiver]:
    """A started NotificationReceiver, closed when the generator is closed."""
    receiver = NotificationReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()


def _routes(route: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield route
    for child in route.get("routes") or []:
        yield from _routes(child)


def _files_named(node: object, trail: str = "") -> Iterator[str]:
    """The paths, within `node`, of every key ending in `_file`."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{trail}.{key}" if trail else str(key)
            if str(key).endswith("_file"):
                yield here
            yield from _files_named(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _files_named(value, f"{trail}[{index}]")


def load_shipped_config() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    return document


def shipped_config_for_test(receiver_url: str, directory: Path) -> dict[str, Any]:
    """config/alertmanager/alertmanager.yml, changed only where it must be to run in a test.

    - Every `pagerduty_configs` entry posts to `receiver_url` + PAGERDUTY_PATH (its `url`), and
      a `routing_key_file` is replaced by a file in `directory` holding TEST_ROUTING_KEY.
    - Every `webhook_configs` entry posts to `receiver_url` + WEBHOOK_PATH.
    - Relative `templates` paths are made absolute (the config is written elsewhere).
    - The root route, and every route that sets them, get `group_wait` and `group_interval`
      of TEST_GROUP_WAIT_SECONDS and TEST_GROUP_INTERVAL_SECONDS.

    Routes, matchers, `group_by`, `repeat_interval`, inhibit rules and templated fields stay
    exactly as shipped, so a test of the result tests the shipped routing. A receiver of any
    other kind, or any other `*_file` setting in a receiver, raises ValueError rather than
    let a test notify the outside world or fail on a missing file: extend this helper then.
    """
    document = copy.deepcopy(load_shipped_config())
    directory.mkdir(parents=True, exist_ok=True)
    base = receiver_url.rstrip("/")
    key_files = 0
    for receiver in document.get("receivers") or []:
        for kind in receiver:
            if kind not in ("name", "pagerduty_configs", "webhook_configs"):
                raise ValueError(
                    f"receiver {receiver['name']!r} has {kind}, which this helper cannot point "
                    "at the loopback receiver"
                )
        for pagerduty in receiver.get("pagerduty_configs") or []:
            pagerduty["url"] = base + PAGERDUTY_PATH
            if "routing_key_file" in pagerduty:
                key_files += 1
                key_file = directory / f"pagerduty-routing-key-{key_files}"
                key_file.write_text(TEST_ROUTING_KEY + "\n", encoding="utf-8")
                pagerduty["routing_key_file"] = str(key_file)
        for webhook in receiver.get("webhook_configs") or []:
            webhook["url"] = base + WEBHOOK_PATH
        unhandled = [
            path
            for path in _files_named(receiver)
            if not path.startswith("pagerduty_configs") or not path.endswith("].routing_key_file")
        ]
        if unhandled:
            raise ValueError(
                f"receiver {receiver['name']!r} reads {unhandled}; this helper does not provide "
                "those files"
            )
    if "templates" in document:
        document["templates"] = [str(SHIPPED_CONFIG.parent / t) for t in document["templates"]]
    wait = f"{TEST_GROUP_WAIT_SECONDS:g}s"
    interval = f"{TEST_GROUP_INTERVAL_SECONDS:g}s"
    for route in _routes(document["route"]):
        if route is document["route"] or "group_wait" in route:
            route["group_wait"] = wait
        if route is document["route"] or "group_interval" in route:
            route["group_interval"] = interval
    return document
