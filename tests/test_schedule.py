"""The scheduler's wiring: a job per target, spread first runs, overlap rules, suspect cadence,
the control job of each environment that has one, and each environment's byte budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestServer
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from canary import schedule
from canary.config import Config, Target
from canary.control import ControlProbe
from canary.metrics import Metrics
from canary.registry.client import RegistryClient
from canary.results import (
    ControlResult,
    ControlStep,
    Evidence,
    ImageResult,
    Outcome,
    WriteOperation,
    WriteOutcome,
)
from canary.schedule import ProbeScheduler, control_job_id, job_id
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

    def make(*sinks: Any, control_sinks: Any = ()) -> tuple[ProbeScheduler, CollectorRegistry]:
        registry = CollectorRegistry()
        log = structlog.get_logger("test")
        probes = ProbeScheduler(
            scheduler, list(sinks), Metrics(registry), log, control_sinks=list(control_sinks)
        )
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


UNREACHABLE = "http://127.0.0.1:1"
CONTROL = "canary/control"


def control_config(control: dict[str, Any] | None = None, **defaults: Any) -> Config:
    """Two environments, `local` with the given control settings (if any) and `other` without."""
    local: dict[str, Any] = {"name": "local", "url": UNREACHABLE}
    if control is not None:
        local["control"] = {"repository": CONTROL, **control}
    return to_config(
        {
            "defaults": {"interval": "60s", "timeout": "20s", "recheck_delay": "10ms", **defaults},
            "environments": [local, {"name": "other", "url": "http://127.0.0.1:2"}],
            "images": [{"repository": "a/a", "tag": "v1"}],
        }
    )


def budget_config(
    bytes_per_hour: str = "1GiB",
    slow_interval: str = "2m",
    blob_check: str = "budget",
    images: tuple[str, ...] = ("a/a", "a/b"),
) -> Config:
    """`local` pulls `images` under `blob_check` (a/b every `slow_interval`); `other` pulls a/c
    with a full GET and has no budget."""
    listed: list[dict[str, Any]] = []
    for repository in images:
        image: dict[str, Any] = {
            "repository": repository,
            "tag": "v1",
            "blob_check": blob_check,
            "environments": ["local"],
        }
        if repository == "a/b":
            image["interval"] = slow_interval
        listed.append(image)
    listed.append({"repository": "a/c", "tag": "v1", "environments": ["other"]})
    return to_config(
        {
            "defaults": {
                "interval": "60s",
                "recheck_delay": "10ms",
                "budget": {"bytes_per_hour": bytes_per_hour, "full_verify_within": "24h"},
            },
            "environments": [
                {"name": "local", "url": UNREACHABLE},
                {"name": "other", "url": "http://127.0.0.1:2"},
            ],
            "images": listed,
        }
    )


class CollectControl:
    """A control sink that keeps what it is given."""

    def __init__(self) -> None:
        self.rounds: list[tuple[ControlResult, float]] = []
        self.forgotten: list[str] = []

    def control(self, result: ControlResult, stale_after: float) -> None:
        self.rounds.append((result, stale_after))

    def forget_control(self, environment: str) -> None:
        self.forgotten.append(environment)


class ExplodeControl:
    def control(self, result: ControlResult, stale_after: float) -> None:
        raise RuntimeError("sink bug")

    def forget_control(self, environment: str) -> None:
        raise RuntimeError("sink bug")


def control_result(deleted: bool | None = True, outcome: Outcome = Outcome.OK) -> ControlResult:
    failed = outcome is not Outcome.OK
    return ControlResult(
        environment="local",
        repository=CONTROL,
        tag="registry-canary-control-1767225600-0a1b2c3d",
        digest="sha256:" + "e" * 64,
        outcome=outcome,
        failed_step=ControlStep.PULL if failed else None,
        durations=((ControlStep.PUSH, 0.1), (ControlStep.PULL, 0.2)),
        writes=((WriteOperation.MANIFEST_PUT, WriteOutcome.OK),),
        deleted=deleted,
        started_at=NOW,
        evidence=Evidence(detail="HTTP 404 BLOB_UNKNOWN") if failed else None,
    )


@dataclass
class FakeControl:
    """Stands in for a ControlProbe: answers rounds from a script and records its clean-ups."""

    script: list[ControlResult | BaseException]
    leftovers: int = 0
    leftovers_problem: str | None = None
    cleanups: list[float] = field(default_factory=list)
    rounds: int = 0
    during_round: Callable[[], None] | None = None

    async def remove_leftovers(self, client: RegistryClient, now: float) -> int:
        self.cleanups.append(now)
        return self.leftovers

    async def round(self, client: RegistryClient) -> ControlResult:
        answer = self.script[min(self.rounds, len(self.script) - 1)]
        self.rounds += 1
        if self.during_round is not None:
            self.during_round()
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Clock:
    """The wall clock as canary.schedule reads it, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(schedule, "time", fake)
    return fake


def swap_control(probes: ProbeScheduler, fake: FakeControl, name: str = "local") -> None:
    state = probes._environments[name]
    assert isinstance(state.control, ControlProbe)  # what the scheduler made, replaced
    state.control = fake  # type: ignore[assignment]


def skipped(registry: CollectorRegistry, reason: str) -> float | None:
    labels = {"environment": "local", "reason": reason}
    return registry.get_sample_value("registry_canary_probes_skipped_total", labels)


class TestControlJobs:
    async def test_a_control_job_only_where_configured(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """An environment with control gets one non-overlapping job at its control interval, first
        run within the jitter; an environment without control gets none."""
        probes, _ = prober()
        probes.apply(control_config({"interval": "5m"}), now=NOW)
        control_jobs = [job for job in scheduler.get_jobs() if job.id.endswith("//control")]
        assert [job.id for job in control_jobs] == ["local//control"]
        job = control_jobs[0]
        assert job.args == ("local",)
        assert job.trigger.interval == timedelta(minutes=5)
        assert job.trigger.jitter is None
        assert job.max_instances == 1
        assert job.coalesce is True
        assert NOW <= job.next_run_time <= NOW + timedelta(seconds=30)
        assert scheduler.get_job(control_job_id("other")) is None

    async def test_the_control_job_id_names_its_environment(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """The control job id never collides with an image job and an overlap of it is counted for
        its environment."""
        assert control_job_id("local") == "local//control"
        assert control_job_id("local") != job_id(("local", "control", ""))
        probes, registry = prober()
        probes.apply(control_config({}), now=NOW)
        event = JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, "local//control", "default", [NOW])
        scheduler._dispatch_event(event)
        assert skipped(registry, "overlap") == 1.0

    async def test_an_unchanged_reload_keeps_the_control_job(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """Reloading the same settings keeps the probe (and what it learnt) and its next run."""
        probes, _ = prober()
        probes.apply(control_config({}), now=NOW)
        probe = probes._environments["local"].control
        first = scheduler.get_job("local//control").next_run_time
        probes.apply(control_config({}), now=NOW + timedelta(seconds=5))
        assert probes._environments["local"].control is probe
        assert scheduler.get_job("local//control").next_run_time == first

    @pytest.mark.parametrize(
        ("control", "defaults", "interval"),
        [
            pytest.param({"interval": "2m"}, {}, 120, id="control-interval"),
            pytest.param({}, {"interval": "3m"}, 180, id="default-interval"),
            pytest.param({}, {"timeout": "40s"}, 60, id="default-timeout"),
        ],
    )
    async def test_changed_settings_replace_the_control_job(
        self,
        scheduler: AsyncIOScheduler,
        prober: Factory,
        control: dict[str, Any],
        defaults: dict[str, Any],
        interval: float,
    ) -> None:
        """A reload that changes the control's interval or timeout, in its own settings or the
        defaults they fall back to, starts a new probe on the new interval."""
        probes, _ = prober()
        probes.apply(control_config({}), now=NOW)
        old = probes._environments["local"].control
        probes.apply(control_config(control, **defaults), now=NOW)
        new = probes._environments["local"].control
        assert new is not None
        assert new is not old
        assert scheduler.get_job("local//control").trigger.interval == timedelta(seconds=interval)
        assert probes.control_stale_after("local") == 2 * interval + new.timeout

    async def test_a_reload_without_control_removes_the_job_and_forgets_it(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """When a reload drops an environment's control, its job goes and every control sink
        forgets the environment."""
        sink = CollectControl()
        probes, _ = prober(control_sinks=[sink])
        probes.apply(control_config({}), now=NOW)
        probes.apply(control_config(None), now=NOW)
        assert scheduler.get_job("local//control") is None
        assert sink.forgotten == ["local"]
        assert probes.control_stale_after("local") is None

    async def test_a_removed_environment_loses_its_control_job(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """When a reload removes an environment that had control, its control job goes and every
        control sink forgets the environment."""
        sink = CollectControl()
        probes, _ = prober(control_sinks=[sink])
        probes.apply(control_config({}), now=NOW)
        only_other = to_config(
            {
                "defaults": {"recheck_delay": "10ms"},
                "environments": [{"name": "other", "url": "http://127.0.0.1:2"}],
                "images": [{"repository": "a/a", "tag": "v1"}],
            }
        )
        probes.apply(only_other, now=NOW)
        assert scheduler.get_job("local//control") is None
        assert sink.forgotten == ["local"]

    async def test_no_control_means_no_job_and_nothing_forgotten(
        self, scheduler: AsyncIOScheduler, prober: Factory
    ) -> None:
        """A catalog without control schedules no control job and bothers no control sink, on
        the first load or a reload."""
        sink = CollectControl()
        probes, _ = prober(control_sinks=[sink])
        probes.apply(control_config(None), now=NOW)
        probes.apply(control_config(None, interval="2m"), now=NOW)
        assert [job.id for job in scheduler.get_jobs() if job.id.endswith("//control")] == []
        assert sink.forgotten == []

    async def test_stale_after_two_intervals_and_a_timeout(self, prober: Factory) -> None:
        """A control verdict counts for two intervals plus a timeout; there is none without
        control or for an unknown environment."""
        probes, _ = prober()
        probes.apply(control_config({"interval": "5m", "timeout": "45s"}), now=NOW)
        assert probes.control_stale_after("local") == 2 * 300 + 45
        assert probes.control_stale_after("other") is None
        assert probes.control_stale_after("nowhere") is None


class TestBudgets:
    async def test_one_budget_per_budgeted_environment(self, prober: Factory) -> None:
        """An environment with budgeted images gets a budget on its settings, held for two of
        its longest intervals; one without gets none."""
        probes, _ = prober()
        probes.apply(budget_config(), now=NOW)
        [(name, settings, budget, cycle)] = probes.budgets()
        assert name == "local"
        assert settings.bytes_per_hour == 1024**3
        assert settings.full_verify_within == 86400
        assert budget.bytes_per_hour == 1024**3
        assert cycle == 120.0  # a/b's interval, the longest
        assert budget.hold == 240.0

    async def test_an_unchanged_reload_keeps_the_budget(self, prober: Factory) -> None:
        """Reloading the same settings keeps the budget and what it has counted: a layer that
        a pull of one of its images verified stays measured and verified."""
        probes, _ = prober()
        probes.apply(budget_config(), now=NOW)
        [(_, _, budget, _)] = probes.budgets()
        layer = "sha256:" + "1" * 64
        assert budget.take(layer, 4096, time.time())
        budget.done(layer, True, 4096, time.time())
        budget.settle(("local", "a/a", "v1"), [layer])
        probes.apply(budget_config(), now=NOW)
        [(_, _, kept, _)] = probes.budgets()
        assert kept is budget
        assert (kept.layers, kept.catalog_bytes, kept.verified_bytes) == (1, 4096, 4096)

    @pytest.mark.parametrize(
        ("change", "bytes_per_hour", "cycle"),
        [
            pytest.param({"bytes_per_hour": "2GiB"}, 2 * 1024**3, 120.0, id="settings"),
            pytest.param({"slow_interval": "5m"}, 1024**3, 300.0, id="longest-interval"),
        ],
    )
    async def test_changed_settings_or_cycle_reconfigure_the_budget(
        self, prober: Factory, change: dict[str, str], bytes_per_hour: int, cycle: float
    ) -> None:
        """A reload that changes the budget's settings or the longest budgeted interval puts
        the new values in force, and keeps what was verified and when."""
        probes, _ = prober()
        probes.apply(budget_config(), now=NOW)
        [(_, _, budget, _)] = probes.budgets()
        layer = "sha256:" + "1" * 64
        assert budget.take(layer, 4096, 1000.0)
        budget.done(layer, True, 4096, 1000.0)
        budget.settle(("local", "a/a", "v1"), [layer])
        probes.apply(budget_config(**change), now=NOW)
        [(_, settings, kept, new_cycle)] = probes.budgets()
        assert kept is budget
        assert settings.bytes_per_hour == kept.bytes_per_hour == bytes_per_hour
        assert new_cycle == cycle
        assert kept.hold == 2 * cycle
        assert (kept.layers, kept.verified_bytes, kept.oldest_age(1500.0)) == (1, 4096, 500.0)

    async def test_an_edited_environment_keeps_its_budget_and_backoff(
        self, prober: Factory
    ) -> None:
        """A reload that changes an environment's other settings replaces its client, but not
        its byte budget nor the registry's Retry-After."""
        probes, _ = prober()
        probes.apply(budget_config(), now=NOW)
        [(_, _, budget, _)] = probes.budgets()
        probes._environments["local"].client.backoff_until = 12345.0
        edited = budget_config()
        environments = tuple(
            env.model_copy(update={"concurrency": 7}) if env.name == "local" else env
            for env in edited.environments
        )
        probes.apply(edited.model_copy(update={"environments": environments}), now=NOW)
        state = probes._environments["local"]
        assert state.environment.concurrency == 7
        [(_, _, kept, _)] = probes.budgets()
        assert kept is budget
        assert state.client.backoff_until == 12345.0

    async def test_no_budgeted_image_drops_the_budget(self, prober: Factory) -> None:
        """When a reload moves every image of the environment off blob_check: budget, its budget
        goes."""
        probes, _ = prober()
        probes.apply(budget_config(), now=NOW)
        assert probes.budgets()
        probes.apply(budget_config(blob_check="head"), now=NOW)
        assert probes.budgets() == []
        assert probes._environments["local"].budget is None

    async def test_a_removed_image_leaves_the_kept_budget(self, prober: Factory) -> None:
        """A reload that removes a budgeted image (but not the longest interval) keeps the budget
        and drops the layers only that image had."""
        probes, _ = prober()
        probes.apply(budget_config(), now=NOW)
        [(_, _, budget, _)] = probes.budgets()
        now = time.time()
        budget.take("sha256:" + "1" * 64, 100, now)
        budget.settle(("local", "a/a", "v1"), ["sha256:" + "1" * 64])
        budget.take("sha256:" + "2" * 64, 200, now)
        budget.settle(("local", "a/b", "v1"), ["sha256:" + "2" * 64])
        assert budget.layers == 2
        probes.apply(budget_config(images=("a/b",)), now=NOW)
        [(_, _, kept, _)] = probes.budgets()
        assert kept is budget
        assert kept.layers == 1
        assert kept.catalog_bytes == 200


@pytest.fixture
async def controlled(prober: Factory) -> tuple[ProbeScheduler, CollectorRegistry, CollectControl]:
    """A scheduler whose `local` environment has control (60 s interval, 20 s timeout)."""
    sink = CollectControl()
    probes, registry = prober(control_sinks=[sink])
    probes.apply(control_config({}), now=NOW)
    return probes, registry, sink


Controlled = tuple[ProbeScheduler, CollectorRegistry, CollectControl]


class TestControlRuns:
    async def test_the_first_round_removes_leftovers_once(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """The first round looks for leftovers before it pushes, counts and logs what went; later
        rounds whose deletes work do not look again."""
        probes, registry, sink = controlled
        fake = FakeControl([control_result()], leftovers=2)
        swap_control(probes, fake)
        with structlog.testing.capture_logs() as logs:
            await probes._run_control("local")
            clock.now += 3600
            await probes._run_control("local")
        assert fake.rounds == 2
        assert len(fake.cleanups) == 1
        removed = registry.get_sample_value(
            "registry_canary_control_leftovers_removed_total", {"environment": "local"}
        )
        assert removed == 2.0
        assert [(line["event"], line.get("tags")) for line in logs] == [
            ("control_leftovers_removed", 2)
        ]
        assert len(sink.rounds) == 2

    async def test_leftovers_that_stay_are_logged(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """Leftovers that could not be removed are logged with why, and the round still runs."""
        probes, registry, sink = controlled
        fake = FakeControl([control_result()], leftovers_problem="deleting sha256:ee failed")
        swap_control(probes, fake)
        with structlog.testing.capture_logs() as logs:
            await probes._run_control("local")
        assert [(line["event"], line["log_level"], line["detail"]) for line in logs] == [
            ("control_leftovers_kept", "warning", "deleting sha256:ee failed")
        ]
        counted = registry.get_sample_value(
            "registry_canary_control_leftovers_removed_total", {"environment": "local"}
        )
        assert counted is None
        assert fake.rounds == 1
        assert len(sink.rounds) == 1

    async def test_a_failed_delete_brings_a_cleanup_once_its_round_is_over(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """After a round whose delete failed, the first round after an interval plus a timeout
        looks for leftovers again, and only that one."""
        probes, _, _ = controlled
        fake = FakeControl([control_result(deleted=False), control_result()])
        swap_control(probes, fake)
        start = clock.now
        await probes._run_control("local")  # first round: clean-up, then a failed delete
        assert fake.cleanups == [start]
        clock.now = start + 60 + 20  # the failed round's tag may still be in use
        await probes._run_control("local")
        assert fake.cleanups == [start]
        clock.now = start + 60 + 20 + 2
        await probes._run_control("local")
        clock.now += 3600
        await probes._run_control("local")
        assert fake.cleanups == [start, start + 82]

    async def test_deletes_turned_off_bring_no_cleanup(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """A registry that does not delete leaves the one overwritten tag; no clean-up follows."""
        probes, _, _ = controlled
        fake = FakeControl([control_result(deleted=None)])
        swap_control(probes, fake)
        for _ in range(3):
            await probes._run_control("local")
            clock.now += 3600
        assert len(fake.cleanups) == 1  # the first round's only

    async def test_results_reach_every_control_sink(self, prober: Factory, clock: Clock) -> None:
        """Each round's result goes to every control sink with the control's staleness limit,
        even after a sink before them raised, which is logged."""
        first, second = CollectControl(), CollectControl()
        probes, _ = prober(control_sinks=[first, ExplodeControl(), second])
        probes.apply(control_config({"interval": "5m", "timeout": "45s"}), now=NOW)
        failed = control_result(outcome=Outcome.BLOB_UNKNOWN)
        swap_control(probes, FakeControl([failed]))
        with structlog.testing.capture_logs() as logs:
            await probes._run_control("local")
        assert first.rounds == [(failed, 645.0)]
        assert second.rounds == [(failed, 645.0)]
        errors = [line for line in logs if line["log_level"] == "error"]
        assert [(e["event"], e["sink"], e["job"]) for e in errors] == [
            ("sink_failed", "ExplodeControl", "local")
        ]
        assert probes.in_flight == 0

    async def test_a_rate_limited_environment_skips_the_round(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """While the registry's Retry-After runs, a control round is skipped and counted, and
        nothing is sent or reported."""
        probes, registry, sink = controlled
        fake = FakeControl([control_result()])
        swap_control(probes, fake)
        probes._environments["local"].client.backoff_until = time.time() + 120
        await probes._run_control("local")
        assert fake.rounds == 0
        assert fake.cleanups == []
        assert sink.rounds == []
        assert skipped(registry, "rate_limited") == 1.0

    async def test_a_probe_that_raises_is_logged_not_raised(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """An exception out of a round is logged against the control job; the job returns."""
        probes, _, sink = controlled
        swap_control(probes, FakeControl([RuntimeError("probe bug")]))
        with structlog.testing.capture_logs() as logs:
            await probes._run_control("local")
        assert [(line["event"], line["job"]) for line in logs] == [
            ("probe_job_failed", "local//control")
        ]
        assert sink.rounds == []
        assert probes.in_flight == 0
        assert probes._environments["local"].users == 0

    @pytest.mark.parametrize(
        ("control", "defaults"),
        [
            pytest.param({}, {"interval": "2m"}, id="default-interval"),
            pytest.param(
                {"interval": "2m"},
                {},
                id="control-interval",
            ),
        ],
    )
    async def test_a_round_that_outlives_its_settings_reports_nothing(
        self,
        controlled: Controlled,
        clock: Clock,
        control: dict[str, Any],
        defaults: dict[str, Any],
    ) -> None:
        """A round in flight while a reload replaced the control reports to no sink: the new
        control reports from its own first round."""
        probes, _, sink = controlled
        fake = FakeControl([control_result()])
        reloaded = control_config(control, **defaults)
        fake.during_round = lambda: probes.apply(reloaded, now=NOW)
        swap_control(probes, fake)
        await probes._run_control("local")
        assert fake.rounds == 1
        assert sink.rounds == []

    async def test_an_environment_without_control_runs_nothing(
        self, controlled: Controlled, clock: Clock
    ) -> None:
        """A control job run for an environment without control, or one gone, does nothing."""
        probes, registry, sink = controlled
        await probes._run_control("other")
        await probes._run_control("nowhere")
        assert sink.rounds == []
        assert skipped(registry, "rate_limited") is None
