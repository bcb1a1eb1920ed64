"""APScheduler wiring: a job per target, spread, jittered, never overlapping, sooner if failing;
a control job per environment that has one; the byte budget of each environment."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from canary.budget import BlobBudget
from canary.config import BlobCheck, Budget, Config, Environment, Target
from canary.control import ControlProbe
from canary.metrics import Metrics
from canary.probe import pull_image
from canary.published.gitlab import GitLabClient
from canary.published.seen import FirstSeen
from canary.registry.client import RegistryClient
from canary.results import Outcome
from canary.shard import Shard
from canary.sinks import ControlSink, Sink

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


def control_job_id(environment: str) -> str:
    # Image jobs are environment/repository:tag; a repository never starts with a slash.
    return f"{environment}//control"


class _Environment:
    """One environment's client and the slots that bound how many images it pulls at once, its
    control probe and its byte budget."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.client = RegistryClient(environment)
        self.gitlab = GitLabClient(environment.gitlab) if environment.gitlab else None
        self.slots = asyncio.Semaphore(environment.concurrency)
        self.users = 0
        self.control: ControlProbe | None = None
        self.control_settings: tuple[float, float] | None = None
        # When to look for control tags a crash or a failed delete left behind (0: at once).
        self.cleanup_at: float | None = 0.0
        self.budget: BlobBudget | None = None  # kept by the scheduler across reloads
        self.budget_config: Budget | None = None
        self.budget_cycle = 0.0  # the longest interval of a budgeted image

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
        control_sinks: Sequence[ControlSink] = (),
    ) -> None:
        self._scheduler = scheduler
        self._control_sinks = control_sinks
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
                replacement = _Environment(environment)
                if current is not None:
                    # What the registry asked for and what was verified outlive a changed
                    # setting: a reload must not reset them.
                    replacement.client.backoff_until = current.client.backoff_until
                    replacement.budget = current.budget
                    replacement.budget_config = current.budget_config
                    replacement.budget_cycle = current.budget_cycle
                    self._retire(current)
                self._environments[environment.name] = replacement
        names = {e.name for e in config.environments}
        for name in [n for n in self._environments if n not in names]:
            self._retire(self._environments.pop(name))
            self._stop_control(name)

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
        for environment in config.environments:
            state = self._environments[environment.name]
            self._apply_control(state, config.control_settings(environment), now)
            owned = [
                t.key
                for t in targets.values()
                if t.environment is environment and t.blob_check is BlobCheck.BUDGET
            ]
            self._apply_budget(state, config.budget_settings(environment), owned)

    def _apply_control(
        self, state: _Environment, settings: tuple[float, float] | None, now: datetime
    ) -> None:
        """Start, replace or stop the environment's control probe to match its settings."""
        name = state.environment.name
        if settings is None:
            state.control = state.control_settings = None
            # Decided on the job: dropping control changes the Environment, so `state` is new.
            self._stop_control(name)
            return
        if state.control is not None and state.control_settings == settings:
            return
        with contextlib.suppress(Exception):
            self._scheduler.remove_job(control_job_id(name))
        state.control_settings = settings
        interval, timeout = settings
        state.control = ControlProbe(state.environment, interval, timeout)
        first = now + _jitter(interval)
        self._scheduler.add_job(
            self._run_control,
            trigger=_trigger(interval, first),
            args=[name],
            id=control_job_id(name),
            name=control_job_id(name),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            next_run_time=first,
        )

    def _stop_control(self, name: str) -> None:
        """Remove an environment's control job, if any, and have the sinks forget its control."""
        job = self._scheduler.get_job(control_job_id(name))
        if job is None:
            return
        job.remove()
        for sink in self._control_sinks:
            sink.forget_control(name)

    def _apply_budget(
        self, state: _Environment, settings: tuple[Budget, float] | None, owned: list[Key]
    ) -> None:
        """Keep one byte budget per environment whose images are under blob_check: budget."""
        if settings is None:
            state.budget = state.budget_config = None
            return
        config, cycle = settings
        if state.budget is None:
            state.budget = BlobBudget(config, hold=2 * cycle, now=time.time())
        elif state.budget_config != config or state.budget_cycle != cycle:
            state.budget.reconfigure(config, hold=2 * cycle)
        state.budget_config, state.budget_cycle = config, cycle
        state.budget.forget_except(set(owned))

    async def _remove_leftovers(
        self, name: str, probe: ControlProbe, client: RegistryClient
    ) -> None:
        removed = await probe.remove_leftovers(client, time.time())
        if removed:
            self._metrics.control_leftovers_removed.labels(name).inc(removed)
            self._log.info("control_leftovers_removed", environment=name, tags=removed)
        if probe.leftovers_problem:
            self._log.warning(
                "control_leftovers_kept", environment=name, detail=probe.leftovers_problem
            )

    def budgets(self) -> list[tuple[str, Budget, BlobBudget, float]]:
        """(environment, settings, budget, cycle) of every environment under a byte budget."""
        return [
            (name, env.budget_config, env.budget, env.budget_cycle)
            for name, env in self._environments.items()
            if env.budget is not None and env.budget_config is not None
        ]

    def control_stale_after(self, environment: str) -> float | None:
        env = self._environments.get(environment)
        if env is None or env.control_settings is None:
            return None
        interval, timeout = env.control_settings
        return 2 * interval + timeout

    async def _run_control(self, name: str) -> None:
        """The control job: push, pull back and delete a fresh image; nothing escapes."""
        environment = self._environments.get(name)
        probe = environment.control if environment is not None else None
        if environment is None or probe is None or self._stopping:
            return
        if environment.client.backoff_remaining() > 0:
            self._metrics.probes_skipped.labels(name, "rate_limited").inc()
            return
        key = (name, "", "//control")
        task = asyncio.current_task()
        with self._job(environment, key, control_job_id(name)):
            if task is not None:
                self._running[key] = task
            if environment.cleanup_at is not None and time.time() >= environment.cleanup_at:
                environment.cleanup_at = None
                await self._remove_leftovers(name, probe, environment.client)
            result = await probe.round(environment.client)
            if result.deleted is False and environment.cleanup_at is None:
                # Its tag is a leftover once no round could still be using it.
                settings = environment.control_settings or (0.0, 0.0)
                environment.cleanup_at = time.time() + sum(settings) + 1
            if self._environments.get(name) is not environment or environment.control is not probe:
                return  # reloaded while in flight: the new settings report from now on
            stale_after = self.control_stale_after(name) or 0.0
            for sink in self._control_sinks:
                try:
                    sink.control(result, stale_after)
                except Exception:
                    self._log.exception("sink_failed", sink=type(sink).__name__, job=name)

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
        with self._job(environment, key, job_id(key)):
            async with environment.slots:
                if self._stopping:
                    return  # queued when shutdown began: not started, so nothing to report
                # In flight only once it has a slot: shutdown waits for pulls, not for the queue.
                if task is not None:
                    self._running[key] = task
                pulled = await pull_image(
                    environment.client, target, environment.gitlab, self._seen, environment.budget
                )
            # Outside the slot: a slow date source must not hold up other pulls.
            result = await pulled.result()
            if self._targets.get(key) is not target:
                return  # reloaded while in flight: the new definition reports from now on
            backoff = environment.client.backoff_until
            self._metrics.environment_backoff_until.labels(key[0]).set(backoff)
            for sink in self._sinks:
                try:
                    sink.consume(result)
                except Exception:
                    self._log.exception("sink_failed", sink=type(sink).__name__, job=job_id(key))
            # Rate limited is not failing: pulling more often would only make it worse.
            failing = not result.ok and result.outcome is not Outcome.TOOMANYREQUESTS
            self._set_cadence(target, failing=failing)

    @contextlib.contextmanager
    def _job(self, environment: _Environment, key: Key, name: str) -> Iterator[None]:
        """A job's boundary: it holds its environment's client, and nothing escapes to the
        scheduler. Only shutdown cancels a job (after its grace period)."""
        environment.users += 1
        try:
            yield
        except asyncio.CancelledError:
            if key in self._running:
                self._log.warning("probe_cancelled", job=name)
        except Exception:
            self._log.exception("probe_job_failed", job=name)
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
