"""The scheduler's wiring: a job per target, spread first runs, overlap rules, suspect cadence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from canary.config import Config, Target
from canary.metrics import Metrics
from canary.results import ImageResult
from canary.schedule import ProbeScheduler, job_id
from tests.conftest import to_config
from tests.fake_registry import FakeRegistry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def config(url: str, repositories: list[str], **defaults: Any) -> Config:
    return to_config(
        {
            "defaults": {"interval": "60s", "recheck_delay": "10ms", **defaults},
            "environments": [{"name": "local", "url": url}],
            "images": [{"repository": r, "tag": "v1"} for r in repositories],
        }
    )


class Collect:
    def __init__(self) -> None:
        self.results: list[ImageResult] = []
        self.tracked: list[list[Target]] = []

    def track(self, targets: list[Target]) -> None:
        self.tracked.append(targets)

    def consume(self, result: ImageResult) -> None:
        self.results.append(result)


class Explode:
    def track(self, targets: list[Target]) -> None:
        pass

    def consume(self, result: ImageResult) -> None:
        raise RuntimeError("sink bug")


@pytest.fixture
async def scheduler() -> AsyncIterator[AsyncIOScheduler]:
    sched = AsyncIOScheduler(timezone=UTC)
    sched.start(paused=True)  # jobs get next run times; none runs
    try:
        yield sched
    finally:
        sched.shutdown(wait=False)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRegistry, str]]:
    registry = FakeRegistry()
    server = TestServer(registry.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield registry, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


Factory = Callable[..., tuple[ProbeScheduler, CollectorRegistry]]


@pytest.fixture
async def prober(scheduler: AsyncIOScheduler) -> AsyncIterator[Factory]:
    """Makes ProbeSchedulers on the paused scheduler and closes their clients afterwards."""
    made: list[ProbeScheduler] = []

    def make(*sinks: Any) -> tuple[ProbeScheduler, CollectorRegistry]:
        registry = CollectorRegistry()
        log = structlog.get_logger("test")
        probes = ProbeScheduler(scheduler, list(sinks), Metrics(registry), log)
        made.append(probes)
        return probes, registry

    yield make
    for probes in made:
        await probes.close()


class TestJobs:
    async def test_one_job_per_target_spread_over_the_interval(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """Each target gets a non-overlapping job; first runs are spread evenly over an interval."""
        probes, _ = prober()
        probes.apply(config("http://127.0.0.1:1", ["a/a", "a/b", "a/c", "a/d"]), now=NOW)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {"local/a/a:v1", "local/a/b:v1", "local/a/c:v1", "local/a/d:v1"}
        starts = sorted((job.trigger.start_date - NOW).total_seconds() for job in jobs.values())
        # Evenly spread over the 60 s interval, each with up to 6 s (10%) of jitter.
        for start, slot in zip(starts, [0.0, 15.0, 30.0, 45.0], strict=True):
            assert slot <= start < slot + 6.0
        for job in jobs.values():
            assert job.trigger.interval == timedelta(seconds=60)
            assert job.trigger.jitter is None  # jitter on every run would make periods drift
            assert job.next_run_time == job.trigger.start_date
            assert job.max_instances == 1
            assert job.coalesce is True

    async def test_reload_keeps_unchanged_jobs(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """A reload drops removed targets, replaces changed ones and leaves the rest alone."""
        probes, _ = prober()
        probes.apply(config("http://127.0.0.1:1", ["a/a", "a/b", "a/c"]), now=NOW)
        kept = scheduler.get_job("local/a/a:v1").trigger.start_date
        changed = to_config(
            {
                "defaults": {"interval": "60s", "recheck_delay": "10ms"},
                "environments": [{"name": "local", "url": "http://127.0.0.1:1"}],
                "images": [
                    {"repository": "a/a", "tag": "v1"},
                    {"repository": "a/b", "tag": "v1", "interval": "2m"},
                ],
            }
        )
        probes.apply(changed, now=NOW + timedelta(seconds=5))
        assert {job.id for job in scheduler.get_jobs()} == {"local/a/a:v1", "local/a/b:v1"}
        assert scheduler.get_job("local/a/a:v1").trigger.start_date == kept
        assert scheduler.get_job("local/a/b:v1").trigger.interval == timedelta(minutes=2)

    async def test_overlap_is_counted(self, scheduler: AsyncIOScheduler, prober: Factory) -> None:
        """A run skipped because the previous one still runs counts as probes_skipped overlap."""
        probes, registry = prober()
        probes.apply(config("http://127.0.0.1:1", ["a/a"]), now=NOW)
        event = JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "local/a/a:v1", "default", [NOW])
        scheduler._dispatch_event(event)
        labels = {"environment": "local", "reason": "overlap"}
        assert registry.get_sample_value("registry_canary_probes_skipped_total", labels) == 1.0


class TestRuns:
    async def test_failing_target_is_probed_sooner_until_it_recovers(
        self, scheduler: AsyncIOScheduler, fake: tuple[FakeRegistry, str], prober: Factory
    ) -> None:
        """A failed pull switches the job to the suspect interval; a good one switches back."""
        registry, url = fake
        collect = Collect()
        probes, _ = prober(Explode(), collect)
        probes.apply(config(url, ["canary/app"]))
        key = ("local", "canary/app", "v1")
        await probes._run(key)  # no such image yet: manifest_unknown
        assert collect.results[-1].outcome.value == "manifest_unknown"
        assert probes.suspect(key)
        assert scheduler.get_job(job_id(key)).trigger.interval == timedelta(seconds=15)
        registry.add_image("canary/app", "v1", [b"layer"])
        await probes._run(key)
        assert collect.results[-1].ok  # the sink before it raised, and this one still got it
        assert not probes.suspect(key)
        assert scheduler.get_job(job_id(key)).trigger.interval == timedelta(seconds=60)

    async def test_drain_waits_for_in_flight_pulls(
        self, scheduler: AsyncIOScheduler, fake: tuple[FakeRegistry, str], prober: Factory
    ) -> None:
        """Draining lets a running pull finish within the grace period and cancels none."""
        registry, url = fake
        registry.add_image("canary/app", "v1", [b"layer"])
        collect = Collect()
        probes, _ = prober(collect)
        probes.apply(config(url, ["canary/app"]))
        task = asyncio.create_task(probes._run(("local", "canary/app", "v1")))
        await asyncio.sleep(0)
        assert probes.in_flight == 1
        assert await probes.drain(grace=10) == 0
        assert task.done()
        assert collect.results[-1].ok
