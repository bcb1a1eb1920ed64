"""`registry-canary run`: the scheduler, the sinks and the HTTP server, signals and reloads."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry, disable_created_metrics

from canary import __version__
from canary.alertmanager import Notifier
from canary.budget import BlobBudget, Shortfall
from canary.config import Budget, Config, ConfigError, load_config, split_listen
from canary.consistency import differences
from canary.logconfig import configure_logging, get_logger
from canary.metrics import Metrics
from canary.published.seen import FirstSeen
from canary.schedule import ProbeScheduler
from canary.shard import Shard
from canary.sinks import ControlSink, Sink
from canary.sinks.alerts import AlertSink
from canary.sinks.diagnosis import DiagnosisSink
from canary.sinks.logs import LogSink
from canary.sinks.metrics import MetricsSink
from canary.sinks.state import StateSink
from canary.sizing import budget_key
from canary.web import make_app, serve

HOUSEKEEPING_SECONDS = 5.0


def _catalog_size(config: Config, shard: Shard | None) -> dict[str, Any]:
    owned = [t for t in config.targets() if shard is None or shard.owns(t.key)]
    return {
        "environments": len(config.environments),
        "images": len(config.images),
        "probes_per_round": len(owned),
        "shard": str(shard) if shard else None,
    }


class Daemon:
    """Probes the catalog forever; SIGHUP reloads, SIGTERM and SIGINT stop it gracefully."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        listen: str | None = None,
        log_level: str | None = None,
        registry: CollectorRegistry | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.shard = shard
        self.config_path = config_path
        self.config = config
        self.listen = listen or config.daemon.listen
        self.log_level = log_level
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.state = StateSink()
        self.alerts = AlertSink()
        self.metrics_sink = MetricsSink(self.metrics)
        self.log = get_logger()
        self.diagnosis = DiagnosisSink(self.metrics, self.log)
        self._short_budgets: dict[str, Shortfall] = {}
        self._notifier: Notifier | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.seen = FirstSeen(config.daemon.state_file, self.log)
        self.started_at = datetime.now(UTC)
        self._stop = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        self._prober: ProbeScheduler | None = None
        self.port: int | None = None

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> bool:
        """Load the config file again; on failure keep the last good config and say why."""
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self.metrics.config_reload_ok.set(0)
            problems = [f"{loc}: {reason}" if loc else reason for loc, reason in exc.problems]
            self.log.error("config_reload_failed", path=str(self.config_path), problems=problems)
            return False
        assert self._prober is not None
        self.config = config
        if self.log_level is None:
            configure_logging(config.daemon.log_level)
        self._prober.apply(config)
        self._configure_alerting(config)
        self._warn_insecure(config)
        self._loaded()
        self.log.info(
            "config_reloaded", path=str(self.config_path), **_catalog_size(config, self.shard)
        )
        return True

    def _configure_alerting(self, config: Config) -> None:
        """Start, replace or stop direct delivery to Alertmanager to match `config`."""
        alerting = config.alerting
        previous = current = self._notifier
        if current is not None and (
            current.config != alerting.alertmanager
            or current.generator_url != alerting.generator_url
        ):
            task = asyncio.get_running_loop().create_task(current.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            current = None
        if current is None and alerting.alertmanager is not None:
            current = Notifier(
                alerting.alertmanager, self.metrics, self.log, alerting.generator_url
            )
            if previous is not None:
                current.take_over(previous)
            current.start()
        self._notifier = current
        self.alerts.configure(current, alerting.external_labels)

    def _warn_insecure(self, config: Config) -> None:
        """Certificate checks turned off are worth a line at every (re)load: they hide a MITM."""
        for env in config.environments:
            if not env.tls_verify:
                self.log.warning("tls_verify_disabled", environment=env.name, server="registry")
            if env.gitlab is not None and not env.gitlab.tls_verify:
                self.log.warning("tls_verify_disabled", environment=env.name, server="gitlab")
        alertmanager = config.alerting.alertmanager
        if alertmanager is not None and not alertmanager.tls_verify:
            self.log.warning("tls_verify_disabled", server="alertmanager")

    async def _housekeeping(self) -> None:
        """Every few seconds: diagnoses whose control went stale, and where each budget stands."""
        try:
            self.diagnosis.refresh()
            prober = self._prober
            budgets = prober.budgets() if prober else []
            for name, settings, budget, cycle in budgets:
                short = budget.shortfall(cycle)
                self.metrics_sink.budget(name, settings, budget, sufficient=short is None)
                self._check_budget(name, short)
            self.metrics_sink.forget_budgets_except({name for name, *_ in budgets})
        except Exception:
            self.log.exception("housekeeping_failed")

    def _check_budget(self, environment: str, short: Shortfall | None) -> None:
        """Say once, at the key to change, when a budget cannot keep up with the catalog."""
        if short is None:
            if self._short_budgets.pop(environment, None) is not None:
                self.log.info("budget_sufficient", environment=environment)
            return
        if self._short_budgets.get(environment) == short:
            return
        self._short_budgets[environment] = short
        self.log.error(
            "budget_insufficient",
            environment=environment,
            key=budget_key(self.config, environment, short.key),
            reason=short.reason,
        )

    def _loaded(self) -> None:
        self.metrics.config_reload_ok.set(1)
        self.metrics.config_reload_time.set(time.time())

    def healthy(self) -> bool:
        return self._scheduler is not None and self._scheduler.running and not self._stop.is_set()

    def status(self) -> dict[str, Any]:
        prober = self._prober
        images = self.state.snapshot()
        for image in images:
            key = (image["environment"], image["repository"], image["tag"])
            next_run = prober.next_run(key) if prober else None
            image["suspect"] = bool(prober and prober.suspect(key))
            image["next_probe"] = next_run.isoformat().replace("+00:00", "Z") if next_run else None
        environments = self.state.environments()
        controls = self.state.controls()
        diagnoses = self.diagnosis.summaries()
        budgets = {
            name: (settings, budget, cycle)
            for name, settings, budget, cycle in (prober.budgets() if prober else [])
        }
        return {
            "version": __version__,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "ready": self.state.ready,
            "shard": str(self.shard) if self.shard else None,
            "environments": [
                {
                    "name": n,
                    "ready": r,
                    "backoff_until": _backoff(prober, n),
                    "diagnosis": diagnoses.get(n),
                    "control": controls.get(n),
                    "budget": _budget(*budgets[n]) if n in budgets else None,
                }
                for n, r in environments.items()
            ],
            "images": images,
            "differences": differences(images),
            "alerts": {
                "alertmanagers": len(self._notifier.config.url) if self._notifier else 0,
                "firing": [dict(alert.labels) for alert in self.alerts.alerts()],
            },
        }

    async def run(self) -> int:
        configure_logging(self.log_level or self.config.daemon.log_level)
        # The `_created` samples would add a third to every scrape and tell dashboards nothing.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        loop = asyncio.get_running_loop()
        self._scheduler = AsyncIOScheduler(timezone=UTC, event_loop=loop)
        logs = LogSink(self.log)
        sinks: list[Sink] = [self.metrics_sink, self.state, logs, self.alerts, self.diagnosis]
        control_sinks: list[ControlSink] = [self.metrics_sink, self.state, logs, self.diagnosis]
        self._prober = ProbeScheduler(
            self._scheduler, sinks, self.metrics, self.log, self.seen, self.shard, control_sinks
        )
        self._scheduler.add_job(
            self._housekeeping, "interval", seconds=HOUSEKEEPING_SECONDS, id="housekeeping"
        )
        self._prober.apply(self.config)
        self._configure_alerting(self.config)
        self._loaded()
        host, port = split_listen(self.listen)
        app = make_app(
            self.registry,
            self.healthy,
            lambda: self.state.ready,
            self.state.environments,
            self.status,
        )
        self._warn_insecure(self.config)
        runner = await serve(app, host, port)
        self.port = _bound_port(runner) or port
        self._scheduler.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.log.info(
            "started",
            version=__version__,
            listen=f"{host}:{self.port}",
            config=str(self.config_path),
            **_catalog_size(self.config, self.shard),
        )
        try:
            await self._stop.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self.log.info(
                "stopping",
                in_flight=self._prober.in_flight,
                grace_seconds=self.config.daemon.grace_period,
            )
            # Pause first: shutting the scheduler down would cancel in-flight pulls at once.
            self._scheduler.pause()
            cancelled = await self._prober.drain(self.config.daemon.grace_period)
            self._scheduler.shutdown(wait=False)
            await runner.cleanup()
            await self._prober.close()
            self.seen.flush()
            if self._notifier is not None:
                await self._notifier.close()
            await asyncio.gather(*self._closing, return_exceptions=True)
            self.log.info("stopped", cancelled=cancelled)
        return 0


def _budget(settings: Budget, budget: BlobBudget, cycle: float) -> dict[str, Any]:
    age = budget.oldest_age(time.time())
    return {
        "bytes_per_hour": settings.bytes_per_hour,
        "full_verify_within_seconds": settings.full_verify_within,
        "layers": budget.layers,
        "catalog_bytes": budget.catalog_bytes,
        "verified_bytes": budget.verified_bytes,
        "oldest_full_verification_age_seconds": None if age is None else round(age, 3),
        "shortfall": short.reason if (short := budget.shortfall(cycle)) else None,
    }


def _backoff(prober: ProbeScheduler | None, environment: str) -> str | None:
    until = prober.backoff_until(environment) if prober else None
    return until.isoformat().replace("+00:00", "Z") if until else None


def _bound_port(runner: Any) -> int | None:
    """The port actually bound, which differs from the one asked for when that was 0."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            port: int = address[1]
            return port
    return None
