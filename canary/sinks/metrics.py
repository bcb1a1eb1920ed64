"""Turns results into Prometheus series, and drops the series of entries that left the catalog."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Sequence
from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

from canary.budget import BlobBudget
from canary.config import Budget, Target
from canary.metrics import Metrics
from canary.results import (
    BlobKind,
    ControlResult,
    ControlStep,
    ImageResult,
    Outcome,
    PublishedStatus,
    SkipReason,
    WriteOperation,
    WriteOutcome,
)

Key = tuple[str, str, str]
M = TypeVar("M", bound=MetricWrapperBase)
# Present at 0 from start-up, so ratios and increase() work from the very first failure.
_BLOB_START = (Outcome.OK, Outcome.BLOB_UNKNOWN)
_MANIFEST_START = (Outcome.OK, Outcome.MANIFEST_UNKNOWN)


class MetricsSink:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._series: dict[Key, set[tuple[MetricWrapperBase, tuple[str, ...]]]] = {}
        # Per environment, the budget last exported and how many of its bytes were counted.
        self._budget_counted: dict[str, tuple[BlobBudget, int]] = {}
        self._environments: set[str] = set()

    def _touch(self, key: Key, metric: M, *labels: str) -> M:
        self._series[key].add((metric, labels))
        return metric.labels(*labels)

    def track(self, targets: Sequence[Target]) -> None:
        keys = {target.key for target in targets}
        for key in [k for k in self._series if k not in keys]:
            for metric, labels in self._series.pop(key):
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)
        environments = {key[0] for key in keys}
        for environment in self._environments - environments:
            self._forget_environment(environment)
        self._environments = environments
        m = self.metrics
        for key in keys - self._series.keys():
            self._series[key] = set()
            for kind in BlobKind:
                for outcome in _BLOB_START:
                    self._touch(key, m.blob_fetches, *key, kind, outcome)
            for outcome in _MANIFEST_START:
                self._touch(key, m.manifest_fetches, *key, outcome)
            m.probes_skipped.labels(key[0], "overlap")
            m.probes_skipped.labels(key[0], "rate_limited")
            m.environment_backoff_until.labels(key[0])
            self._touch(key, m.image_pulls, *key)
            self._touch(key, m.image_pull_failures, *key)
        for target in targets:
            self._touch(target.key, m.image_probe_interval, *target.key).set(target.interval)
            if target.image.digest is None:  # unpinned by a reload: nothing to compare with
                self._series[target.key].discard((m.tag_digest_matches_pin, target.key))
                with contextlib.suppress(KeyError):
                    m.tag_digest_matches_pin.remove(*target.key)
            self._drop_sources(target)
            self._drop_requirements(target)

    def _forget_environment(self, environment: str) -> None:
        """Drop the per-environment series of an environment a reload removed; their other
        labels are closed sets."""
        m = self.metrics
        removals: list[tuple[MetricWrapperBase, tuple[str, ...]]] = [
            (m.environment_backoff_until, (environment,)),
            (m.image_pull_duration, (environment,)),
            (m.control_leftovers_removed, (environment,)),
        ]
        removals += [(m.probes_skipped, (environment, r)) for r in ("overlap", "rate_limited")]
        removals += [
            (m.skipped, (environment, kind, reason))
            for kind, reason in itertools.product(("manifest", "layer"), SkipReason)
        ]
        for kind in BlobKind:
            removals += [(m.blob_fetch_duration, (environment, kind))]
            removals += [(m.blob_fetch_bytes, (environment, kind))]
            removals += [
                (m.blob_rechecks, (environment, kind, first, outcome))
                for first, outcome in itertools.product(Outcome, Outcome)
                if first.is_data_loss
            ]
        for metric, labels in removals:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
        self.forget_control(environment)

    def _drop_sources(self, target: Target) -> None:
        """Forget the date series of sources a reload removed from the environment."""
        sources = set(target.published_sources)
        dated = (self.metrics.tag_published, self.metrics.tag_published_valid)
        series = self._series[target.key]
        for metric, labels in [s for s in series if s[0] in dated and s[1][3] not in sources]:
            series.discard((metric, labels))
            with contextlib.suppress(KeyError):
                metric.remove(*labels)

    def _drop_requirements(self, target: Target) -> None:
        """Forget the referrer series a reload turned off or no longer requires."""
        m = self.metrics
        wanted = set(target.referrers.require) if target.referrers is not None else set()
        series = self._series[target.key]
        for metric, labels in [
            s for s in series if s[0] is m.referrer_requirement_met and s[1][3] not in wanted
        ]:
            series.discard((metric, labels))
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
        if target.referrers is None and (m.image_referrers, target.key) in series:
            series.discard((m.image_referrers, target.key))
            with contextlib.suppress(KeyError):
                m.image_referrers.remove(*target.key)

    def consume(self, result: ImageResult) -> None:
        key = result.key
        if key not in self._series:
            return  # removed from the catalog while this pull was in flight
        m, env = self.metrics, result.environment
        for manifest in (*result.manifests, *result.referrers):
            if manifest.outcome is not Outcome.REFERRER_MISSING:  # a finding, not a fetch
                self._touch(key, m.manifest_fetches, *key, manifest.outcome).inc()
        for skipped in result.skipped:
            m.skipped.labels(env, skipped.kind, skipped.reason).inc()
        if result.referrers_checked:
            self._touch(key, m.image_referrers, *key).set(result.referrers_read)
        for requirement, met in result.requirements:
            if met is not None:
                metric = m.referrer_requirement_met
                self._touch(key, metric, *key, requirement).set(1 if met else 0)
        for blob in result.blobs:
            self._touch(key, m.blob_fetches, *key, blob.kind, blob.outcome).inc()
            m.blob_fetch_duration.labels(env, blob.kind).observe(blob.duration_seconds)
            m.blob_fetch_bytes.labels(env, blob.kind).inc(blob.bytes)
            if blob.first_outcome.is_data_loss:
                m.blob_rechecks.labels(env, blob.kind, blob.first_outcome, blob.outcome).inc()
        m.image_pull_duration.labels(env).observe(result.duration_seconds)
        now = time.time()
        self._touch(key, m.image_pulls, *key).inc()
        if not result.ok:
            self._touch(key, m.image_pull_failures, *key).inc()
        self._touch(key, m.image_pull_success, *key).set(1 if result.ok else 0)
        matches = result.matches_pin
        if matches is not None:
            self._touch(key, m.tag_digest_matches_pin, *key).set(1 if matches else 0)
        if (unknown := result.blobs_unknown) is not None:
            self._touch(key, m.image_blobs_unknown, *key).set(unknown)
        self._touch(key, m.image_last_probe, *key).set(now)
        if result.ok:
            self._touch(key, m.image_last_success, *key).set(now)
        for published in result.published:
            labels = (*key, published.source)
            if published.timestamp is not None:
                stamp = published.timestamp.timestamp()
                self._touch(key, m.tag_published, *labels).set(stamp)
            else:
                with contextlib.suppress(KeyError):
                    m.tag_published.remove(*labels)
            valid = 1 if published.status is PublishedStatus.OK else 0
            self._touch(key, m.tag_published_valid, *labels).set(valid)

    def control(self, result: ControlResult, stale_after: float) -> None:
        m, env = self.metrics, result.environment
        m.control_pull_success.labels(env).set(1 if result.ok else 0)
        if result.ok:
            m.control_last_success.labels(env).set(time.time())
        for step, seconds in result.durations:
            m.control_duration.labels(env, step).observe(seconds)
        for operation, outcome in result.writes:
            m.control_writes.labels(env, operation, outcome).inc()

    def forget_control(self, environment: str) -> None:
        m = self.metrics
        for metric in (m.control_pull_success, m.control_last_success, m.control_leftovers_removed):
            with contextlib.suppress(KeyError):
                metric.remove(environment)
        for step in ControlStep:
            with contextlib.suppress(KeyError):
                m.control_duration.remove(environment, step)
        for operation, outcome in itertools.product(WriteOperation, WriteOutcome):
            with contextlib.suppress(KeyError):
                m.control_writes.remove(environment, operation, outcome)

    def budget(
        self, environment: str, settings: Budget, budget: BlobBudget, sufficient: bool
    ) -> None:
        """Export where an environment's byte budget stands."""
        m = self.metrics
        m.budget_bytes_per_hour.labels(environment).set(settings.bytes_per_hour)
        m.budget_full_verify_within.labels(environment).set(settings.full_verify_within)
        m.budget_catalog_bytes.labels(environment).set(budget.catalog_bytes)
        last, counted = self._budget_counted.get(environment, (None, 0))
        # A new budget (its settings changed) counts its bytes from zero.
        verified = budget.verified_bytes - (counted if last is budget else 0)
        m.budget_verified_bytes.labels(environment).inc(verified)
        self._budget_counted[environment] = (budget, budget.verified_bytes)
        age = budget.oldest_age(time.time())
        if age is None:
            with contextlib.suppress(KeyError):
                m.budget_oldest_verification_age.remove(environment)
        else:
            m.budget_oldest_verification_age.labels(environment).set(age)
        m.budget_sufficient.labels(environment).set(1 if sufficient else 0)

    def forget_budgets_except(self, environments: set[str]) -> None:
        m = self.metrics
        gauges = (
            m.budget_bytes_per_hour,
            m.budget_full_verify_within,
            m.budget_catalog_bytes,
            m.budget_oldest_verification_age,
            m.budget_sufficient,
            m.budget_verified_bytes,
        )
        for environment in [e for e in self._budget_counted if e not in environments]:
            del self._budget_counted[environment]
            for metric in gauges:
                with contextlib.suppress(KeyError):
                    metric.remove(environment)
