"""429 Retry-After: the environment backs off for as long as the registry asked, says so in a
metric and in /status, is `toomanyrequests` (never a page), and is not probed harder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from canary.metrics import Metrics
from canary.registry.client import DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER, parse_retry_after
from canary.schedule import ProbeScheduler, job_id
from tests.fake_registry import FakeRegistry
from tests.test_schedule import Collect, config

NOW = 1_800_000_000.0
KEY = ("local", "canary/app", "v1")


class TestRetryAfter:
    def test_delta_seconds(self) -> None:
        """A number is seconds to wait."""
        assert parse_retry_after("7", NOW) == 7.0

    def test_http_date(self) -> None:
        """An HTTP date is waited for until it comes; a past one means now."""
        later = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
        earlier = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
        assert parse_retry_after(later, NOW) == 90.0
        assert parse_retry_after(earlier, NOW) == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3"])
    def test_missing_or_unusable_means_the_default(self, value: str | None) -> None:
        """A 429 without a usable Retry-After still slows the canary down."""
        assert parse_retry_after(value, NOW) == DEFAULT_RETRY_AFTER

    def test_capped(self) -> None:
        """A registry cannot silence the canary for days."""
        assert parse_retry_after("999999", NOW) == MAX_RETRY_AFTER


@pytest.fixture
async def limited() -> AsyncIterator[tuple[FakeRegistry, str]]:
    """A fake registry whose manifest answers 429 with Retry-After: 120."""
    registry = FakeRegistry()
    registry.add_image("canary/app", "v1", [b"layer"])

    async def too_many(request: web.Request) -> web.Response:
        body = {"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down", "detail": None}]}
        return web.json_response(body, status=429, headers={"Retry-After": "120"})

    registry.faults["/v2/canary/app/manifests/v1"] = too_many
    server = TestServer(registry.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield registry, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def test_a_429_backs_the_environment_off_without_a_page(
    limited: tuple[FakeRegistry, str],
) -> None:
    """After a 429 the next scheduled pulls are skipped and counted until Retry-After passes;
    the outcome is toomanyrequests, the image is not probed at the suspect cadence, and the
    backoff is exported."""
    registry, url = limited
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.start(paused=True)
    metrics_registry = CollectorRegistry()
    collect = Collect()
    probes = ProbeScheduler(
        scheduler, [collect], Metrics(metrics_registry), structlog.get_logger("test")
    )
    try:
        probes.apply(config(url, ["canary/app"]))
        before = datetime.now(UTC)
        await probes._run(KEY)
        assert [r.outcome.value for r in collect.results] == ["toomanyrequests"]
        assert not probes.suspect(KEY)  # rate limited is not failing: no faster cadence
        assert scheduler.get_job(job_id(KEY)).trigger.interval == timedelta(seconds=60)
        until = probes.backoff_until("local")
        assert until is not None
        assert timedelta(seconds=115) < until - before <= timedelta(seconds=121)
        exported = metrics_registry.get_sample_value(
            "registry_canary_environment_backoff_until_timestamp_seconds", {"environment": "local"}
        )
        assert exported == pytest.approx(until.timestamp(), abs=0.01)
        requests = len(registry.requests)
        await probes._run(KEY)
        await probes._run(KEY)
        assert len(registry.requests) == requests  # nothing sent while backing off
        assert len(collect.results) == 1
        skipped = metrics_registry.get_sample_value(
            "registry_canary_probes_skipped_total",
            {"environment": "local", "reason": "rate_limited"},
        )
        assert skipped == 2.0
    finally:
        scheduler.shutdown(wait=False)
        await probes.close()
