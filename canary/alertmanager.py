"""Posts the daemon's own alerts to Alertmanager (API v2): resent while firing, resolved,
retried with backoff; a slow or dead Alertmanager never holds up probing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import aiohttp

from canary.metrics import Metrics
from canary.registry.auth import basic_header
from canary.registry.client import USER_AGENT, ssl_context
from canary.registry.errors import safe_url
from canary.servers import Alertmanager

Labels = tuple[tuple[str, str], ...]
API_PATH = "/api/v2/alerts"
# Firing alerts expire this many resend intervals after each post unless renewed (Prometheus: 4).
EXPIRY_INTERVALS = 4
# Resolutions keep being sent this long, so an Alertmanager down at the time still learns them.
RESOLVED_RETENTION = timedelta(minutes=15)
MAX_ERROR_TEXT = 200


class DeliveryOutcome(StrEnum):
    """The closed set of `outcome` label values of registry_canary_alert_deliveries_total."""

    OK = "ok"
    HTTP_3XX = "http_3xx"  # redirects are not followed: credentials stay with the configured URL
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as the daemon sees it now; its labels are its identity."""

    labels: Labels
    annotations: Labels
    starts_at: datetime

    @staticmethod
    def make(labels: dict[str, str], annotations: dict[str, str], starts_at: datetime) -> Alert:
        return Alert(tuple(sorted(labels.items())), tuple(sorted(annotations.items())), starts_at)

    def to_api(self, ends_at: datetime, generator_url: str | None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": _stamp(self.starts_at),
            "endsAt": _stamp(ends_at),
        }
        if generator_url:
            document["generatorURL"] = generator_url
        return document


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Notifier:
    """Keeps every configured Alertmanager told of the current alerts, each on its own task."""

    def __init__(
        self,
        config: Alertmanager,
        metrics: Metrics,
        log: Any,
        generator_url: str | None = None,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._log = log
        self.generator_url = generator_url
        self._firing: dict[Labels, Alert] = {}
        self._resolved: dict[Labels, tuple[Alert, datetime]] = {}
        self._wake = {url: asyncio.Event() for url in config.url}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        for outcome in DeliveryOutcome:
            metrics.alert_deliveries.labels(outcome)

    @property
    def firing(self) -> list[Alert]:
        return list(self._firing.values())

    def take_over(self, previous: Notifier) -> None:
        """Keep sending the resolutions `previous` was still sending, when settings change."""
        self._resolved.update(previous._resolved)

    def set_firing(self, alerts: Iterable[Alert], now: datetime | None = None) -> None:
        """The alerts firing now; alerts firing before and absent now are resolved."""
        firing = {alert.labels: alert for alert in alerts}
        for labels in [labels for labels in self._firing if labels not in firing]:
            self.resolve(labels, now)
        for alert in firing.values():
            self.put(alert)

    def put(self, alert: Alert) -> None:
        """`alert` fires (or its annotations changed)."""
        previous = self._firing.get(alert.labels)
        if previous == alert:
            return
        if previous is None:
            self._log.warning("alert_firing", labels=dict(alert.labels))
        self._firing[alert.labels] = alert
        self._resolved.pop(alert.labels, None)
        self._changed()

    def resolve(self, labels: Labels, now: datetime | None = None) -> None:
        """The alert with `labels`, if firing, is resolved as of `now`."""
        alert = self._firing.pop(labels, None)
        if alert is None:
            return
        self._resolved[labels] = (alert, now or datetime.now(UTC))
        self._log.info("alert_resolved", labels=dict(labels))
        self._changed()

    def _changed(self) -> None:
        self._metrics.alerts_firing.set(len(self._firing))
        for event in self._wake.values():
            event.set()

    def payload(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """What a post sends: every firing alert, and resolutions still within retention."""
        now = now or datetime.now(UTC)
        expires = now + timedelta(seconds=EXPIRY_INTERVALS * self.config.resend_interval)
        for labels in [
            k for k, (_, ended) in self._resolved.items() if now - ended > RESOLVED_RETENTION
        ]:
            del self._resolved[labels]
        documents = [alert.to_api(expires, self.generator_url) for alert in self._firing.values()]
        documents += [
            alert.to_api(ended, self.generator_url) for alert, ended in self._resolved.values()
        ]
        return documents

    def start(self) -> None:
        config = self.config
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context(config), limit=len(config.url) * 2),
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._deliver(url)) for url in config.url]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, url: str) -> None:
        """Post on every change and every resend interval; after a failure, retry with
        backoff (1 s, doubling, at most a resend interval) until a post succeeds."""
        wake = self._wake[url]
        failures = 0
        while True:
            wake.clear()
            documents = self.payload()
            if documents:
                try:
                    ok = await self._post(url, documents, failures)
                except Exception:  # a bug here must not end delivery for good
                    self._log.exception("alert_delivery_bug", alertmanager=safe_url(url))
                    ok = False
                if not ok:
                    failures += 1
                    await asyncio.sleep(min(2.0 ** (failures - 1), self.config.resend_interval))
                    continue
                if failures:
                    self._log.info(
                        "alert_delivery_recovered", alertmanager=safe_url(url), failures=failures
                    )
                failures = 0
            wait = self.config.resend_interval if documents else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), wait)

    async def _post(self, url: str, documents: list[dict[str, Any]], failures: int) -> bool:
        assert self._session is not None
        headers = {}
        if self.config.auth is not None:
            headers["Authorization"] = basic_header(*self.config.auth.pair())
        started = time.monotonic()
        status: int | None = None
        detail = ""
        try:
            async with self._session.post(
                url + API_PATH, json=documents, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                if status < 300:
                    outcome = DeliveryOutcome.OK
                else:
                    outcome = {3: DeliveryOutcome.HTTP_3XX, 4: DeliveryOutcome.HTTP_4XX}.get(
                        status // 100, DeliveryOutcome.HTTP_5XX
                    )
                    text = (await response.content.read(MAX_ERROR_TEXT)).decode("utf-8", "replace")
                    detail = " ".join(text.split())
        except TimeoutError:
            outcome, detail = DeliveryOutcome.TIMEOUT, f"no answer within {self.config.timeout:g}s"
        except aiohttp.ClientSSLError as exc:
            outcome, detail = DeliveryOutcome.TLS_ERROR, type(exc).__name__
        except aiohttp.ClientError as exc:
            outcome, detail = DeliveryOutcome.CONNECTION_ERROR, type(exc).__name__
        self._metrics.alert_deliveries.labels(outcome).inc()
        fields = {
            "alertmanager": safe_url(url),
            "alerts": len(documents),
            "firing": len(self._firing),
            "duration_seconds": round(time.monotonic() - started, 4),
        }
        if outcome == DeliveryOutcome.OK:
            self._log.debug("alerts_delivered", **fields)
            return True
        self._log.warning(
            "alert_delivery_failed",
            outcome=outcome,
            status=status,
            detail=detail,
            attempt=failures + 1,
            **fields,
        )
        return False
