"""APScheduler wiring: a job per target, spread, jittered, never overlapping, sooner if failing."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from canary.config import Config, Environment, Target
from canary.metrics import Metrics
from canary.probe import pull_image
from canary.published.gitlab import GitLabClient
from canary.published.seen import FirstSeen
from canary.registry.client import RegistryClient
from canary.results import Outcome
from canary.shard import Shard
from canary.sinks import Sink

Key = tuple[str, str, str]
JITTER_FRACTION = 0.1
MAX_JITTER_SECONDS = 30.0


def job_id(key: Key) -> str:
    environment, repository, tag = key
    return f"{environment}/{repository}:{tag}"


def _trigger(seconds: float, first_run: datetime) -> IntervalTrigger:
    # No per-run jitter: APScheduler adds it to already-jittered times, so periods would drift.
    return IntervalTrigger(seconds=seconds, start_date=first_run, timezone=UTC)


def _jitter(seconds: float) -> timedelta:
    """A random offset of up to a tenth of an interval (30 s at most), applied to first runs."""
    return timedelta(seconds=random.uniform(0, min(seconds * JITTER_FRACTION, MAX_JITTER_SECONDS)))  # noqa: S311


class _Environment:
    """One environment's client and the slots that bound how many images it pulls at once."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.client = RegistryClient(environment)
        self.gitlab = GitLabClient(environment.gitlab) if environment.gitlab else None
        self.slots = asyncio.Semaphore(environment.concurrency)
        self.users = 0

    async def close(self) -> None:
        await self.client.close()
        if self.gitlab is not None:
            await self.gitlab.close()


class ProbeScheduler:
    """Keeps one APScheduler job per catalog target and hands each result to every sink."""

    def __init__(
        self,
        scheduler: AsyncIOScheduler,
        sinks: Sequence[Sink],
        metrics: Metrics,
        log: Any,
        seen: FirstSeen | None = None,
        shard: Shard | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._seen = seen
        self._shard = shard
        self._sinks = sinks
        self._metrics = metrics
        self._log = log
        self._environments: dict[str, _Environment] = {}
        self._targets: dict[Key, Target] = {}
        self._suspect: set[Key] = set()
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._retired: set[_Environment] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._stopping = False
        scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)

    def suspect(self, key: Key) -> bool:
        return key in self._suspect

    def backoff_until(self, environment: str) -> datetime | None:
        """Until when `environment`'s registry asked to be left alone, if it did and still is."""
        env = self._environments.get(environment)
        if env is None or env.client.backoff_remaining() <= 0:
            return None
        return datetime.fromtimestamp(env.client.backoff_until, UTC)

    def next_run(self, key: Key) -> datetime | None:
        job = self._scheduler.get_job(job_id(key))
        moment: datetime | None = job.next_run_time if job else None
        return moment

    def apply(self, config: Config, now: datetime | None = None) -> None:
        """Make the jobs match `config`: new targets spread over an interval, gone ones dropped."""
        now = now or datetime.now(UTC)
        for environment in config.environments:
            current = self._environments.get(environment.name)
            if current is None or current.environment != environment:
                if current is not None:
                    self._retire(current)
                self._environments[environment.name] = _Environment(environment)
        names = {e.name for e in config.environments}
        for name in [n for n in self._environments if n not in names]:
            self._retire(self._environments.pop(name))

        shard = self._shard
        targets = {t.key: t for t in config.targets() if shard is None or shard.owns(t.key)}
        for key in [k for k in self._targets if k not in targets]:
            with contextlib.suppress(Exception):
                self._scheduler.remove_job(job_id(key))
            self._suspect.discard(key)
        fresh = [t for key, t in targets.items() if self._targets.get(key) != t]
        self._targets = targets
        for position, target in enumerate(fresh):
            # Spread the first runs evenly over the first interval, so a big catalog never bursts.
            spread = timedelta(seconds=target.interval * position / max(len(fresh), 1))
            first = now + spread + _jitter(target.interval)
            self._suspect.discard(target.key)
            self._scheduler.add_job(
                self._run,
                trigger=_trigger(target.interval, first),
                args=[target.key],
                id=job_id(target.key),
                name=job_id(target.key),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                replace_existing=True,
                # Explicit, because a start date already past when the scheduler starts would
                # otherwise be pushed a whole interval out.
                next_run_time=first,
            )
        for sink in self._sinks:
            sink.track(list(targets.values()))
        if self._seen is not None:
            self._seen.forget_except(set(targets))

    def _retire(self, environment: _Environment) -> None:
        """Close a replaced environment's client once no pull uses it any more."""
        self._retired.add(environment)
        if environment.users == 0:
            self._retired.discard(environment)
            task = asyncio.get_running_loop().create_task(environment.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _skipped(self, event: JobSubmissionEvent) -> None:
        environment = str(event.job_id).split("/", 1)[0]
        self._metrics.probes_skipped.labels(environment, "overlap").inc()
        # Counted always, logged at debug: an overloaded catalog would flood the log otherwise.
        self._log.debug("probe_skipped", job=event.job_id, reason="overlap")

    async def _run(self, key: Key) -> None:
        """The job: pull one target and fan the result out; nothing escapes to the scheduler."""
        target = self._targets.get(key)
        environment = self._environments.get(key[0])
        if target is None or environment is None:
            return
        if environment.client.backoff_remaining() > 0:
            # The registry said when to come back (429 Retry-After); asking sooner is abuse.
            self._metrics.probes_skipped.labels(key[0], "rate_limited").inc()
            self._log.debug("probe_skipped", job=job_id(key), reason="rate_limited")
            return
        task = asyncio.current_task()
        environment.users += 1
        try:
            async with environment.slots:
                if self._stopping:
                    return  # queued when shutdown began: not started, so nothing to report
                # In flight only once it has a slot: shutdown waits for pulls, not for the queue.
                if task is not None:
                    self._running[key] = task
                pulled = await pull_image(
                    environment.client, target, environment.gitlab, self._seen
                )
            # Outside the slot: a slow date source must not hold up other pulls.
            result = await pulled.result()
            backoff = environment.client.backoff_until
            self._metrics.environment_backoff_until.labels(key[0]).set(backoff)
            if self._targets.get(key) is not target:
                return  # reloaded while in flight: the new definition reports from now on
            for sink in self._sinks:
                try:
                    sink.consume(result)
                except Exception:
                    self._log.exception("sink_failed", sink=type(sink).__name__, job=job_id(key))
            # Rate limited is not failing: pulling more often would only make it worse.
            failing = not result.ok and result.outcome is not Outcome.TOOMANYREQUESTS
            self._set_cadence(target, failing=failing)
        except asyncio.CancelledError:
            # Only shutdown cancels a pull (after its grace period); the scheduler must not see it.
            if key in self._running:
                self._log.warning("probe_cancelled", job=job_id(key))
        except Exception:
            self._log.exception("probe_job_failed", job=job_id(key))
        finally:
            self._running.pop(key, None)
            environment.users -= 1
            if environment in self._retired:
                self._retire(environment)

    def _set_cadence(self, target: Target, failing: bool) -> None:
        key = target.key
        if failing == (key in self._suspect) or target.suspect_interval >= target.interval:
            return
        seconds = target.suspect_interval if failing else target.interval
        if failing:
            self._suspect.add(key)
        else:
            self._suspect.discard(key)
        first = datetime.now(UTC) + timedelta(seconds=seconds) + _jitter(seconds)
        with contextlib.suppress(Exception):  # the job may have been removed by a reload
            self._scheduler.reschedule_job(job_id(key), trigger=_trigger(seconds, first))

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def drain(self, grace: float) -> int:
        """Let in-flight pulls finish for up to `grace` seconds, cancel the rest; how many were."""
        self._stopping = True
        tasks = list(self._running.values())
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)

    async def close(self) -> None:
        environments = [*self._environments.values(), *self._retired]
        self._environments.clear()
        self._retired.clear()
        closing = [env.close() for env in environments]
        await asyncio.gather(*closing, *self._closing, return_exceptions=True)
