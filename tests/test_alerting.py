"""The daemon's own alerts: which alerts the sink fires, and how the notifier delivers them to
Alertmanagers faked by aiohttp servers (the real Alertmanager is in test_alerting_e2e.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from canary.alertmanager import Alert, Notifier
from canary.config import Config
from canary.daemon import Daemon
from canary.metrics import Metrics
from canary.results import Outcome
from canary.servers import Alertmanager
from canary.sinks.alerts import AlertSink
from canary.testbed import free_port
from tests.conftest import REPO_ROOT, to_config
from tests.test_sinks import result

RULES = REPO_ROOT / "config" / "prometheus" / "rules.yml"


class RecordingLog:
    """A logger that keeps every call, to assert what was logged and what never was."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log

    def events(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, name, fields in self.lines if name == event]


class FakeAlertmanager:
    """Answers POST /api/v2/alerts with `status`, or holds requests while `stall` is set."""

    def __init__(self) -> None:
        self.posts: list[list[dict[str, Any]]] = []
        self.authorization: list[str | None] = []
        self.status = 200
        self.stall = False
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.authorization.append(request.headers.get("Authorization"))
        if self.stall:
            await asyncio.sleep(3600)  # until the client gives up and disconnects
        self.posts.append(await request.json())
        if self.status >= 300:
            return web.Response(status=self.status, text="cannot store alerts right now")
        return web.Response(status=200)

    async def __aenter__(self) -> FakeAlertmanager:
        app = web.Application()
        app.router.add_post("/api/v2/alerts", self.handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll `check` until it holds; fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def settings(*urls: str, **extra: Any) -> Alertmanager:
    return Alertmanager.model_validate({"url": list(urls), **extra})


def alert(repository: str = "canary/a", started: datetime | None = None) -> Alert:
    labels = {
        "alertname": "RegistryCanaryBlobUnknown",
        "environment": "local",
        "repository": repository,
        "severity": "page",
    }
    return Alert.make(labels, {"summary": "s"}, started or datetime.now(UTC))


@pytest.fixture
async def fake_am() -> AsyncIterator[FakeAlertmanager]:
    async with FakeAlertmanager() as server:
        yield server


def deliveries(registry: CollectorRegistry, outcome: str) -> float:
    found = registry.get_sample_value(
        "registry_canary_alert_deliveries_total", {"outcome": outcome}
    )
    assert found is not None, f"no deliveries series for outcome {outcome}"
    return found


@contextlib.asynccontextmanager
async def delivering(
    config: Alertmanager, registry: CollectorRegistry | None = None, log: Any = None
) -> AsyncIterator[Notifier]:
    """A started notifier, closed on exit."""
    notifier = Notifier(
        config, Metrics(registry or CollectorRegistry()), log or RecordingLog(), "http://canary/"
    )
    notifier.start()
    try:
        yield notifier
    finally:
        await notifier.close()


class TestNotifier:
    async def test_posts_firing_alerts_that_expire_unless_renewed(
        self, fake_am: FakeAlertmanager
    ) -> None:
        """A firing alert is posted at once with endsAt four resend intervals ahead."""
        registry = CollectorRegistry()
        async with delivering(settings(fake_am.url), registry) as notifier:
            started = datetime.now(UTC) - timedelta(seconds=5)
            notifier.set_firing([alert(started=started)])
            await until(lambda: len(fake_am.posts) == 1)
            (sent,) = fake_am.posts[0]
            assert sent["labels"] == dict(alert().labels)
            assert sent["generatorURL"] == "http://canary/"
            assert datetime.fromisoformat(sent["startsAt"]) == started.replace(
                microsecond=started.microsecond // 1000 * 1000
            )
            expires = datetime.fromisoformat(sent["endsAt"]) - datetime.now(UTC)
            assert timedelta(seconds=230) < expires <= timedelta(seconds=240)
            assert deliveries(registry, "ok") == 1.0
            assert registry.get_sample_value("registry_canary_alerts_firing") == 1.0

    async def test_resends_while_firing_and_sends_the_resolution(
        self, fake_am: FakeAlertmanager
    ) -> None:
        """Firing alerts are posted every resend interval; a resolved one is sent ended."""
        async with delivering(settings(fake_am.url, resend_interval="1s")) as notifier:
            notifier.set_firing([alert()])
            await until(lambda: len(fake_am.posts) >= 2)
            assert all(len(post) == 1 for post in fake_am.posts)
            resolved_at = datetime.now(UTC)
            notifier.set_firing([])
            await until(lambda: len(fake_am.posts) >= 4)  # the change, then a resend
            for post in fake_am.posts[-2:]:
                (sent,) = post
                ended = datetime.fromisoformat(sent["endsAt"])
                assert abs(ended - resolved_at) < timedelta(seconds=1)

    async def test_nothing_is_posted_without_alerts(self, fake_am: FakeAlertmanager) -> None:
        """No empty posts: the first post Alertmanager sees already holds the first alert."""
        async with delivering(settings(fake_am.url, resend_interval="1s")) as notifier:
            notifier.set_firing([])
            await asyncio.sleep(0)
            notifier.set_firing([alert("canary/b")])
            await until(lambda: len(fake_am.posts) >= 1)
            assert [a["labels"]["repository"] for a in fake_am.posts[0]] == ["canary/b"]

    async def test_failing_alertmanager_is_retried_until_it_accepts(
        self, fake_am: FakeAlertmanager
    ) -> None:
        """5xx answers are counted and retried with backoff; the alert arrives once it recovers."""
        registry = CollectorRegistry()
        log = RecordingLog()
        fake_am.status = 500
        async with delivering(settings(fake_am.url), registry, log) as notifier:
            notifier.set_firing([alert()])
            await until(lambda: len(fake_am.posts) >= 2)
            fake_am.status = 200
            await until(lambda: deliveries(registry, "ok") == 1.0)
            assert deliveries(registry, "http_5xx") >= 2
            failed = log.events("alert_delivery_failed")
            assert failed[0]["outcome"] == "http_5xx"
            assert failed[0]["detail"] == "cannot store alerts right now"
            assert [f["attempt"] for f in failed[:2]] == [1, 2]
            assert log.events("alert_delivery_recovered")

    async def test_a_stalled_alertmanager_delays_neither_the_other_nor_the_caller(self) -> None:
        """With an HA pair, one Alertmanager that never answers times out alone."""
        registry = CollectorRegistry()
        async with FakeAlertmanager() as stalled, FakeAlertmanager() as healthy:
            stalled.stall = True
            async with delivering(
                settings(stalled.url, healthy.url, timeout="3s"), registry
            ) as notifier:
                notifier.set_firing([alert()])  # returns at once: delivery is on its own tasks
                await until(lambda: len(healthy.posts) == 1)
                # Delivered while the stalled post is still waiting for its 3 s timeout.
                assert deliveries(registry, "timeout") == 0
                await until(lambda: deliveries(registry, "timeout") >= 1)

    async def test_unreachable_alertmanager_is_a_connection_error(self) -> None:
        """A closed port counts as connection_error and is logged without the password."""
        registry = CollectorRegistry()
        log = RecordingLog()
        config = Alertmanager.model_validate(
            {
                "url": f"http://127.0.0.1:{free_port()}",
                "auth": {"username": "canary", "password_env": "AM_PASSWORD"},
            },
            context={"environ": {"AM_PASSWORD": "hunter2-secret"}},
        )
        async with delivering(config, registry, log) as notifier:
            notifier.set_firing([alert()])
            await until(lambda: deliveries(registry, "connection_error") >= 1)
        assert "hunter2-secret" not in repr(log.lines)

    async def test_redirects_are_not_followed(self, fake_am: FakeAlertmanager) -> None:
        """A redirect is a failed delivery, so credentials never travel to another URL."""
        registry = CollectorRegistry()
        fake_am.status = 307
        async with delivering(settings(fake_am.url), registry) as notifier:
            notifier.set_firing([alert()])
            await until(lambda: deliveries(registry, "http_3xx") >= 1)
        assert deliveries(registry, "ok") == 0

    def test_resolutions_are_sent_for_a_while_then_dropped(self) -> None:
        """A resolved alert stays in every post for 15 minutes, then leaves them."""
        notifier = Notifier(
            settings("http://127.0.0.1:9"), Metrics(CollectorRegistry()), RecordingLog()
        )
        resolved_at = datetime.now(UTC)
        notifier.set_firing([alert()], now=resolved_at)
        notifier.set_firing([], now=resolved_at)
        soon = notifier.payload(now=resolved_at + timedelta(minutes=14))
        assert [datetime.fromisoformat(a["endsAt"]) for a in soon] == [
            resolved_at.replace(microsecond=resolved_at.microsecond // 1000 * 1000)
        ]
        assert notifier.payload(now=resolved_at + timedelta(minutes=16)) == []

    async def test_basic_auth_is_sent(self, fake_am: FakeAlertmanager) -> None:
        """Configured credentials reach Alertmanager as HTTP Basic auth."""
        config = Alertmanager.model_validate(
            {"url": fake_am.url, "auth": {"username": "canary", "password_env": "AM_PASSWORD"}},
            context={"environ": {"AM_PASSWORD": "s3cret"}},
        )
        async with delivering(config) as notifier:
            notifier.set_firing([alert()])
            await until(lambda: len(fake_am.posts) == 1)
            assert fake_am.authorization == ["Basic Y2FuYXJ5OnMzY3JldA=="]  # canary:s3cret


def two_tag_config(**alerting: Any) -> Config:
    document: dict[str, Any] = {
        "environments": [{"name": "local", "url": "http://127.0.0.1:5000"}],
        "images": [
            {"repository": "canary/a", "tag": "v1"},
            {"repository": "canary/a", "tag": "v2"},
            {"repository": "canary/b", "tag": "v1"},
        ],
    }
    if alerting:
        document["alerting"] = alerting
    return to_config(document)


def tagged(repository: str, tag: str, outcome: Outcome = Outcome.OK) -> Any:
    return replace(result(repository, outcome), tag=tag)


class CapturingNotifier(Notifier):
    """A notifier that is never started: what it was told is the test's observation."""

    def __init__(self) -> None:
        super().__init__(
            settings("http://127.0.0.1:1"), Metrics(CollectorRegistry()), RecordingLog()
        )


class TestAlertSink:
    def test_one_alert_per_repository_with_the_rule_labels(self) -> None:
        """Two failing tags of one repository are one alert, labelled like the rule's."""
        sink, notifier = AlertSink(), CapturingNotifier()
        sink.configure(notifier, {"cluster": "eu-1"})
        sink.track(list(two_tag_config().targets()))
        sink.consume(tagged("canary/a", "v1", Outcome.BLOB_UNKNOWN))
        first = notifier.firing[0].starts_at
        sink.consume(tagged("canary/a", "v2", Outcome.BLOB_UNKNOWN))
        sink.consume(tagged("canary/b", "v1"))
        (fired,) = notifier.firing
        assert dict(fired.labels) == {
            "alertname": "RegistryCanaryBlobUnknown",
            "environment": "local",
            "repository": "canary/a",
            "severity": "page",
            "cluster": "eu-1",
        }
        assert fired.starts_at == first
        annotations = dict(fired.annotations)
        assert annotations["description"].startswith(
            "2 blob(s) of previously pushed images in canary/a answer 404 BLOB_UNKNOWN in local"
        )
        assert "No verified pull since the canary started." in annotations["description"]
        assert annotations["runbook_url"].endswith("README.md#registrycanaryblobunknown")

    def test_early_stop_keeps_the_alert_and_a_verified_pull_resolves_it(self) -> None:
        """A pull that stops before the blobs says nothing new; only a verified pull resolves."""
        sink, notifier = AlertSink(), CapturingNotifier()
        sink.configure(notifier, {})
        sink.track(list(two_tag_config().targets()))
        sink.consume(tagged("canary/b", "v1", Outcome.BLOB_UNKNOWN))
        assert len(notifier.firing) == 1
        sink.consume(replace(tagged("canary/b", "v1", Outcome.UNAVAILABLE), blobs=()))
        assert len(notifier.firing) == 1
        sink.consume(tagged("canary/b", "v1"))
        assert notifier.firing == []
        (resolved,) = notifier.payload()
        assert datetime.fromisoformat(resolved["endsAt"]) <= datetime.now(UTC)

    def test_a_verified_pull_of_another_tag_is_the_repositorys_last_verified_pull(
        self,
    ) -> None:
        """Like the rule's annotation, "last verified pull" reads every tag of the repository:
        a verified pull of its healthy tag updates the firing alert."""
        sink, notifier = AlertSink(), CapturingNotifier()
        sink.configure(notifier, {})
        sink.track(list(two_tag_config().targets()))
        sink.consume(tagged("canary/a", "v1", Outcome.BLOB_UNKNOWN))
        (before,) = notifier.firing
        assert (
            "No verified pull since the canary started." in dict(before.annotations)["description"]
        )
        sink.consume(tagged("canary/a", "v2"))
        (after,) = notifier.firing
        assert "Last verified pull: " in dict(after.annotations)["description"]
        assert after.starts_at == before.starts_at

    def test_leaving_the_catalog_resolves(self) -> None:
        """An image removed by a reload no longer fires."""
        sink, notifier = AlertSink(), CapturingNotifier()
        sink.configure(notifier, {})
        targets = list(two_tag_config().targets())
        sink.track(targets)
        sink.consume(tagged("canary/b", "v1", Outcome.BLOB_UNKNOWN))
        sink.track([t for t in targets if t.image.repository != "canary/b"])
        assert notifier.firing == []

    def test_labels_match_the_prometheus_rule(self) -> None:
        """The sink's label names are exactly those the shipped rule produces, or the two paths
        would be two alerts in Alertmanager."""
        groups = yaml.safe_load(RULES.read_text())["groups"]
        rules = {r.get("alert") or r["record"]: r for g in groups for r in g["rules"]}
        rule = rules["RegistryCanaryBlobUnknown"]
        source = rules[rule["expr"].split(">")[0].strip()]
        match = re.search(r"by \(([^)]*)\)", source["expr"])
        assert match is not None
        rule_labels = {"alertname", *rule["labels"], *(x.strip() for x in match[1].split(","))}
        sink, notifier = AlertSink(), CapturingNotifier()
        sink.configure(notifier, {})
        sink.track(list(two_tag_config().targets()))
        sink.consume(tagged("canary/a", "v1", Outcome.BLOB_UNKNOWN))
        (fired,) = notifier.firing
        assert set(dict(fired.labels)) == rule_labels
        assert dict(fired.labels)["severity"] == rule["labels"]["severity"]


class TestDaemonAlerting:
    async def test_reload_starts_replaces_and_stops_delivery(self, tmp_path: Path) -> None:
        """Alertmanager settings follow the config: added, changed and removed by reloads."""
        daemon = Daemon(tmp_path / "unused.yaml", two_tag_config())
        daemon._configure_alerting(two_tag_config())
        assert daemon._notifier is None
        daemon._configure_alerting(two_tag_config(alertmanager={"url": "http://127.0.0.1:1"}))
        first = daemon._notifier
        assert first is not None
        daemon._configure_alerting(two_tag_config(alertmanager={"url": "http://127.0.0.1:1"}))
        assert daemon._notifier is first  # unchanged settings keep the running notifier
        first.set_firing([alert()])
        first.set_firing([])  # a resolution the next notifier must keep sending
        daemon._configure_alerting(two_tag_config(alertmanager={"url": "http://127.0.0.1:2"}))
        assert daemon._notifier is not first
        assert [a["labels"] for a in daemon._notifier.payload()] == [dict(alert().labels)]
        assert daemon._notifier is not None
        assert daemon._notifier.config.url == ("http://127.0.0.1:2",)
        daemon._configure_alerting(two_tag_config())
        assert daemon._notifier is None
        await asyncio.gather(*daemon._closing)
        assert first._tasks == []
