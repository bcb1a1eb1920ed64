"""Sinks: results into Prometheus series, the state behind /status, and canonical log lines, for
image pulls, control rounds and byte budgets."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from canary.budget import BlobBudget
from canary.config import Budget, Target
from canary.metrics import Metrics
from canary.results import (
    BlobKind,
    BlobResult,
    ControlResult,
    ControlStep,
    Evidence,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    PublishedResult,
    PublishedStatus,
    WriteOperation,
    WriteOutcome,
)
from canary.sinks.logs import LogSink
from canary.sinks.metrics import MetricsSink
from canary.sinks.state import StateSink
from tests.conftest import to_config

CREATED = datetime(2023, 5, 1, 12, tzinfo=UTC)


def targets(*repositories: str, environments: tuple[str, ...] = ("local",)) -> list[Target]:
    document = {
        "environments": [
            {"name": n, "url": f"http://127.0.0.1:{5000 + i}"} for i, n in enumerate(environments)
        ],
        "images": [{"repository": r, "tag": "v1"} for r in repositories],
    }
    return list(to_config(document).targets())


def result(
    repository: str, outcome: Outcome = Outcome.OK, environment: str = "local"
) -> ImageResult:
    evidence = (
        None if outcome is Outcome.OK else Evidence(detail="HTTP 404 BLOB_UNKNOWN", status=404)
    )
    blobs = (
        BlobResult(
            "sha256:" + "c" * 64,
            BlobKind.CONFIG,
            "linux/amd64",
            outcome,
            Hop.REGISTRY,
            200,
            10,
            outcome,
            0.01,
            evidence=evidence,
        ),
        BlobResult(
            "sha256:" + "d" * 64,
            BlobKind.LAYER,
            "linux/amd64",
            Outcome.OK,
            Hop.STORAGE,
            200,
            1000,
            Outcome.OK,
            0.02,
            request_id="r-1",
        ),
    )
    published = (
        (PublishedResult(CREATED, "config", PublishedStatus.OK),)
        if outcome is Outcome.OK
        else (
            PublishedResult(
                None, "config", PublishedStatus.MISSING, "the config blob could not be read"
            ),
        )
    )
    return ImageResult(
        environment=environment,
        repository=repository,
        tag="v1",
        outcome=outcome,
        manifests=(ManifestResult("sha256:" + "a" * 64, Outcome.OK, 200),),
        blobs=blobs,
        published=published,
        started_at=CREATED,
        duration_seconds=0.05,
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


ENTRY = {"environment": "local", "repository": "canary/a", "tag": "v1"}


class TestMetricsSink:
    def test_series_exist_at_zero_from_start(self) -> None:
        """ok and blob_unknown counters exist at 0 for every entry and kind before any pull."""
        registry = CollectorRegistry()
        MetricsSink(Metrics(registry)).track(targets("canary/a", "canary/b"))
        for repository in ("canary/a", "canary/b"):
            for kind in ("config", "layer"):
                for outcome in ("ok", "blob_unknown"):
                    labels = dict(ENTRY, repository=repository, kind=kind, outcome=outcome)
                    assert value(registry, "registry_canary_blob_fetches_total", **labels) == 0.0
            manifest = dict(ENTRY, repository=repository, outcome="manifest_unknown")
            assert value(registry, "registry_canary_manifest_fetches_total", **manifest) == 0.0
        assert value(registry, "registry_canary_build_info", version="0.1.0") == 1.0

    def test_results_become_counts_gauges_and_histograms(self) -> None:
        """A failed then a good pull count per kind and outcome and set the gauges."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets("canary/a"))
        sink.consume(result("canary/a", Outcome.BLOB_UNKNOWN))
        config_unknown = dict(ENTRY, kind="config", outcome="blob_unknown")
        assert value(registry, "registry_canary_blob_fetches_total", **config_unknown) == 1.0
        assert value(registry, "registry_canary_image_pull_success", **ENTRY) == 0.0
        assert (
            value(registry, "registry_canary_image_last_success_timestamp_seconds", **ENTRY) is None
        )
        published = dict(ENTRY, source="config")
        assert (
            value(registry, "registry_canary_tag_published_timestamp_seconds", **published) is None
        )
        assert value(registry, "registry_canary_tag_published_date_valid", **published) == 0.0

        sink.consume(result("canary/a"))
        assert value(registry, "registry_canary_image_pull_success", **ENTRY) == 1.0
        assert (
            value(registry, "registry_canary_image_last_success_timestamp_seconds", **ENTRY)
            is not None
        )
        assert (
            value(registry, "registry_canary_tag_published_timestamp_seconds", **published)
            == CREATED.timestamp()
        )
        assert value(registry, "registry_canary_tag_published_date_valid", **published) == 1.0
        assert (
            value(
                registry,
                "registry_canary_blob_fetch_bytes_total",
                environment="local",
                kind="layer",
            )
            == 2000.0
        )
        assert (
            value(
                registry, "registry_canary_image_pull_duration_seconds_count", environment="local"
            )
            == 2.0
        )
        assert (
            value(
                registry,
                "registry_canary_blob_fetch_duration_seconds_count",
                environment="local",
                kind="config",
            )
            == 2.0
        )

    def test_removed_entries_lose_their_series(self) -> None:
        """An entry dropped from the catalog disappears from every per-entry metric."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets("canary/a", "canary/b"))
        sink.consume(result("canary/a"))
        sink.consume(result("canary/b"))
        sink.track(targets("canary/b"))
        names = {s.labels.get("repository") for m in registry.collect() for s in m.samples}
        assert "canary/a" not in names
        assert "canary/b" in names
        sink.consume(result("canary/a"))  # a pull that was in flight during the reload
        names = {s.labels.get("repository") for m in registry.collect() for s in m.samples}
        assert "canary/a" not in names

    def test_pull_counters_start_at_zero_and_count_failures(self) -> None:
        """Pulls and failures exist at 0 before any pull, so the first failure shows in rate()."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets("canary/a"))
        assert value(registry, "registry_canary_image_pulls_total", **ENTRY) == 0.0
        assert value(registry, "registry_canary_image_pull_failures_total", **ENTRY) == 0.0
        assert value(registry, "registry_canary_image_probe_interval_seconds", **ENTRY) == 60.0
        sink.consume(result("canary/a", Outcome.UNAVAILABLE))
        sink.consume(result("canary/a"))
        assert value(registry, "registry_canary_image_pulls_total", **ENTRY) == 2.0
        assert value(registry, "registry_canary_image_pull_failures_total", **ENTRY) == 1.0

    def test_blobs_unknown_latches_until_a_verified_pull(self) -> None:
        """Unknown blobs stay counted through pulls that stop early, and clear on a verified one."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets("canary/a"))
        name = "registry_canary_image_blobs_unknown"
        assert value(registry, name, **ENTRY) is None  # no verdict yet
        sink.consume(result("canary/a", Outcome.BLOB_UNKNOWN))
        assert value(registry, name, **ENTRY) == 1.0
        stopped_early = replace(result("canary/a", Outcome.UNAVAILABLE), blobs=())
        sink.consume(stopped_early)
        assert value(registry, name, **ENTRY) == 1.0
        sink.consume(result("canary/a"))
        assert value(registry, name, **ENTRY) == 0.0

    def test_rechecks_count_first_and_confirmed_outcomes(self) -> None:
        """A miss that cleared on its recheck is counted apart from a confirmed one."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets("canary/a"))
        cleared = result("canary/a")
        config_blob = replace(cleared.blobs[0], first_outcome=Outcome.BLOB_UNKNOWN)
        sink.consume(replace(cleared, blobs=(config_blob, cleared.blobs[1])))
        sink.consume(result("canary/a", Outcome.BLOB_UNKNOWN))
        labels = {"environment": "local", "kind": "config", "first_outcome": "blob_unknown"}
        assert value(registry, "registry_canary_blob_rechecks_total", **labels, outcome="ok") == 1
        confirmed = dict(labels, outcome="blob_unknown")
        assert value(registry, "registry_canary_blob_rechecks_total", **confirmed) == 1.0
        assert value(registry, "registry_canary_image_blobs_unknown", **ENTRY) == 1.0
        layer = dict(labels, kind="layer", outcome="ok")
        assert value(registry, "registry_canary_blob_rechecks_total", **layer) is None

    def test_an_environment_removed_by_a_reload_loses_its_series(self) -> None:
        """Every per-environment series of an environment that left the catalog goes, and the
        remaining environment keeps its own."""
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        sink = MetricsSink(metrics)
        sink.track(targets("canary/a", environments=("local", "other")))
        for environment in ("local", "other"):
            sink.consume(result("canary/a", Outcome.BLOB_UNKNOWN, environment=environment))
            metrics.control_leftovers_removed.labels(environment).inc()
        per_environment = [
            ("registry_canary_probes_skipped_total", {"reason": "rate_limited"}),
            ("registry_canary_environment_backoff_until_timestamp_seconds", {}),
            ("registry_canary_image_pull_duration_seconds_count", {}),
            ("registry_canary_blob_fetch_bytes_total", {"kind": "config"}),
            ("registry_canary_blob_fetch_duration_seconds_count", {"kind": "layer"}),
            (
                "registry_canary_blob_rechecks_total",
                {"kind": "config", "first_outcome": "blob_unknown", "outcome": "blob_unknown"},
            ),
            ("registry_canary_control_leftovers_removed_total", {}),
        ]
        for name, labels in per_environment:
            assert value(registry, name, environment="other", **labels) is not None, name
        sink.track(targets("canary/a"))
        for name, labels in per_environment:
            assert value(registry, name, environment="other", **labels) is None, name
            assert value(registry, name, environment="local", **labels) is not None, name


class TestStateSink:
    def test_ready_once_every_environment_finished_a_round(self) -> None:
        """Readiness needs a result for every entry of every environment, failures included."""
        state = StateSink()
        assert not state.ready  # no catalog yet: nothing has finished a round
        state.track(targets("canary/a", "canary/b", environments=("one", "two")))
        assert state.environments() == {"one": False, "two": False}
        for repository in ("canary/a", "canary/b"):
            state.consume(result(repository, Outcome.BLOB_UNKNOWN, environment="one"))
        state.consume(result("canary/a", environment="two"))
        assert state.environments() == {"one": True, "two": False}
        assert not state.ready
        state.consume(result("canary/b", environment="two"))
        assert state.ready
        # A reload adding an entry does not make a ready environment unready.
        state.track(targets("canary/a", "canary/b", "canary/c", environments=("one", "two")))
        assert state.ready

    def test_snapshot_keeps_last_success_across_failures(self) -> None:
        """The snapshot shows the latest result and when the entry last succeeded."""
        state = StateSink()
        state.track(targets("canary/a"))
        assert state.snapshot()[0]["result"] is None
        state.consume(result("canary/a"))
        state.consume(result("canary/a", Outcome.BLOB_UNKNOWN))
        entry = state.snapshot()[0]
        assert entry["outcome"] == "blob_unknown"
        assert entry["last_success"] is not None
        assert entry["last_probe"] >= entry["last_success"]
        assert entry["result"]["blobs"][0]["evidence"]["status"] == 404


class TestLogSink:
    def test_one_canonical_line_per_pull(self) -> None:
        """A pull logs one line; a failed one at warning level with each failing blob."""
        sink = LogSink(structlog.get_logger("test"))
        with structlog.testing.capture_logs() as logs:
            sink.consume(result("canary/a"))
            sink.consume(result("canary/a", Outcome.BLOB_UNKNOWN))
        assert [(line["event"], line["log_level"]) for line in logs] == [
            ("image_probed", "info"),
            ("image_probed", "warning"),
        ]
        failed = logs[1]
        assert failed["outcome"] == "blob_unknown"
        assert failed["failures"] == [
            {
                "outcome": "blob_unknown",
                "status": 200,
                "digest": "sha256:" + "c" * 64,
                "kind": "config",
                "hop": "registry",
                "first_outcome": "blob_unknown",
                "request_id": None,
                "platform": "linux/amd64",
                "detail": "HTTP 404 BLOB_UNKNOWN",
            }
        ]
        assert logs[0]["published"] == {"config": "2023-05-01T12:00:00Z"}
        assert "failures" not in logs[0]

    def test_manifest_failures_carry_hop_and_request_id(self) -> None:
        """A failed manifest is logged with its kind, hop and correlation id like a blob."""
        missing = ManifestResult(
            None,
            Outcome.MANIFEST_UNKNOWN,
            404,
            first_outcome=Outcome.MANIFEST_UNKNOWN,
            evidence=Evidence(detail="HTTP 404 MANIFEST_UNKNOWN", status=404),
            request_id="req-9",
        )
        pulled = replace(
            result("canary/a"), outcome=Outcome.MANIFEST_UNKNOWN, manifests=(missing,), blobs=()
        )
        with structlog.testing.capture_logs() as logs:
            LogSink(structlog.get_logger("test")).consume(pulled)
        assert logs[0]["failures"] == [
            {
                "outcome": "manifest_unknown",
                "status": 404,
                "digest": None,
                "kind": "manifest",
                "hop": "registry",
                "first_outcome": "manifest_unknown",
                "request_id": "req-9",
                "detail": "HTTP 404 MANIFEST_UNKNOWN",
            }
        ]


PIN = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def pinned_targets(*repositories: str, pin: str | None = PIN) -> list[Target]:
    images: list[dict[str, Any]] = [{"repository": r, "tag": "v1"} for r in repositories]
    if pin is not None:
        for image in images:
            image["digest"] = pin
    document = {"environments": [{"name": "local", "url": "http://127.0.0.1:5000"}]}
    return list(to_config({**document, "images": images}).targets())


def pulled(manifest: ManifestResult, pin: str | None = PIN) -> ImageResult:
    """A pull of canary/a:v1 pinned to `pin` whose top manifest ended as `manifest` says."""
    good = result("canary/a")
    return replace(
        good,
        outcome=manifest.outcome,
        manifests=(manifest,),
        blobs=good.blobs if manifest.outcome is Outcome.OK else (),
        pinned_digest=pin,
    )


SERVED_PIN = ManifestResult(PIN, Outcome.OK, 200, served_digest=PIN)
SERVED_OTHER = ManifestResult(PIN, Outcome.DIGEST_MISMATCH, 200, served_digest=OTHER)
TAG_GONE = ManifestResult(PIN, Outcome.MANIFEST_UNKNOWN, 404)
UNAVAILABLE = ManifestResult(PIN, Outcome.UNAVAILABLE, 503)
MATCHES_PIN = "registry_canary_tag_digest_matches_pin"


class TestMetricsSinkPin:
    def test_serving_the_pin_is_one_and_another_digest_zero(self) -> None:
        """The gauge follows what the tag serves: 1 for the pinned digest, 0 for another."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(pinned_targets("canary/a"))
        assert value(registry, MATCHES_PIN, **ENTRY) is None  # unknown until a pull
        sink.consume(pulled(SERVED_PIN))
        assert value(registry, MATCHES_PIN, **ENTRY) == 1.0
        sink.consume(pulled(SERVED_OTHER))
        assert value(registry, MATCHES_PIN, **ENTRY) == 0.0
        sink.consume(pulled(SERVED_PIN))
        assert value(registry, MATCHES_PIN, **ENTRY) == 1.0

    def test_a_gone_tag_does_not_match_its_pin(self) -> None:
        """A tag the registry no longer knows serves nothing, which is not the pin: 0."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(pinned_targets("canary/a"))
        sink.consume(pulled(SERVED_PIN))
        sink.consume(pulled(TAG_GONE))
        assert value(registry, MATCHES_PIN, **ENTRY) == 0.0

    def test_an_unanswered_fetch_leaves_the_gauge_as_it_was(self) -> None:
        """A 503 says nothing about the tag: the last known answer stays, and none appears."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(pinned_targets("canary/a"))
        sink.consume(pulled(UNAVAILABLE))
        assert value(registry, MATCHES_PIN, **ENTRY) is None
        sink.consume(pulled(SERVED_OTHER))
        sink.consume(pulled(UNAVAILABLE))
        assert value(registry, MATCHES_PIN, **ENTRY) == 0.0

    def test_unpinned_tags_have_no_pin_series(self) -> None:
        """An image without a pin never gets the gauge, whatever it serves."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(pinned_targets("canary/a", pin=None))
        sink.consume(pulled(ManifestResult(None, Outcome.OK, 200, served_digest=OTHER), pin=None))
        assert value(registry, MATCHES_PIN, **ENTRY) is None

    def test_an_image_removed_from_the_catalog_loses_the_gauge(self) -> None:
        """Dropping a pinned image from the catalog drops its pin gauge."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(pinned_targets("canary/a", "canary/b"))
        sink.consume(pulled(SERVED_PIN))
        sink.track(pinned_targets("canary/b"))
        assert value(registry, MATCHES_PIN, **ENTRY) is None

    def test_a_pin_removed_by_a_reload_drops_the_gauge(self) -> None:
        """When a reload unpins an image, its pin gauge goes: the metric is absent for unpinned
        tags, and an old 0 would keep alerting."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(pinned_targets("canary/a"))
        sink.consume(pulled(SERVED_OTHER))
        sink.track(pinned_targets("canary/a", pin=None))
        sink.consume(pulled(ManifestResult(None, Outcome.OK, 200, served_digest=OTHER), pin=None))
        assert value(registry, MATCHES_PIN, **ENTRY) is None


def control_result(
    outcome: Outcome = Outcome.OK,
    environment: str = "local",
    failed_step: ControlStep | None = None,
    deleted: bool | None = True,
    pull: ImageResult | None = None,
) -> ControlResult:
    failed = outcome is not Outcome.OK
    return ControlResult(
        environment=environment,
        repository="canary/control",
        tag="registry-canary-control-1682942400-0a1b2c3d",
        digest="sha256:" + "e" * 64,
        outcome=outcome,
        failed_step=failed_step,
        durations=(
            (ControlStep.PUSH, 0.25),
            (ControlStep.PULL, 0.5),
            (ControlStep.DELETE, 0.125),
        ),
        writes=(
            (WriteOperation.BLOB_UPLOAD, WriteOutcome.OK),
            (WriteOperation.BLOB_UPLOAD, WriteOutcome.OK),
            (WriteOperation.MANIFEST_PUT, WriteOutcome.OK),
            (WriteOperation.MANIFEST_DELETE, WriteOutcome.FAILED if failed else WriteOutcome.OK),
        ),
        deleted=deleted,
        started_at=CREATED,
        evidence=Evidence(detail="HTTP 404 BLOB_UNKNOWN on the pull back") if failed else None,
        pull=pull,
    )


LOCAL = {"environment": "local"}


class TestMetricsSinkControl:
    def test_a_good_round_sets_success_durations_and_writes(self) -> None:
        """A good round sets success and its time, observes each step's duration under its step,
        and counts each write by operation and outcome."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        before = time.time()
        sink.control(control_result(), 140.0)
        after = time.time()
        assert value(registry, "registry_canary_control_pull_success", **LOCAL) == 1.0
        last = value(registry, "registry_canary_control_last_success_timestamp_seconds", **LOCAL)
        assert last is not None
        assert before <= last <= after
        duration = "registry_canary_control_duration_seconds"
        for step, seconds in (("push", 0.25), ("pull", 0.5), ("delete", 0.125)):
            assert value(registry, f"{duration}_count", **LOCAL, step=step) == 1.0
            assert value(registry, f"{duration}_sum", **LOCAL, step=step) == seconds
        writes = "registry_canary_control_writes_total"
        assert value(registry, writes, **LOCAL, operation="blob_upload", outcome="ok") == 2.0
        assert value(registry, writes, **LOCAL, operation="manifest_put", outcome="ok") == 1.0
        assert value(registry, writes, **LOCAL, operation="manifest_delete", outcome="ok") == 1.0

    def test_a_failed_round_keeps_the_last_success(self) -> None:
        """A failed round sets success to 0, leaves when it last succeeded, and adds its writes."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.control(control_result(), 140.0)
        last = value(registry, "registry_canary_control_last_success_timestamp_seconds", **LOCAL)
        failed = control_result(Outcome.BLOB_UNKNOWN, failed_step=ControlStep.PULL, deleted=False)
        sink.control(failed, 140.0)
        assert value(registry, "registry_canary_control_pull_success", **LOCAL) == 0.0
        assert (
            value(registry, "registry_canary_control_last_success_timestamp_seconds", **LOCAL)
            == last
        )
        writes = "registry_canary_control_writes_total"
        assert value(registry, writes, **LOCAL, operation="blob_upload", outcome="ok") == 4.0
        failed_delete = {"operation": "manifest_delete", "outcome": "failed"}
        assert value(registry, writes, **LOCAL, **failed_delete) == 1.0
        assert (
            value(registry, "registry_canary_control_duration_seconds_count", **LOCAL, step="pull")
            == 2.0
        )

    def test_a_failed_first_round_has_no_last_success(self) -> None:
        """Until a round succeeds there is no time of last success to show."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.control(control_result(Outcome.TIMEOUT, failed_step=ControlStep.PUSH), 140.0)
        assert value(registry, "registry_canary_control_pull_success", **LOCAL) == 0.0
        assert (
            value(registry, "registry_canary_control_last_success_timestamp_seconds", **LOCAL)
            is None
        )

    def test_forget_control_drops_the_environments_gauges(self) -> None:
        """Forgetting an environment's control removes its success gauges and no one else's."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.control(control_result(), 140.0)
        sink.control(control_result(environment="other"), 140.0)
        sink.forget_control("local")
        sink.forget_control("never-had-one")
        for name in (
            "registry_canary_control_pull_success",
            "registry_canary_control_last_success_timestamp_seconds",
        ):
            assert value(registry, name, **LOCAL) is None
            assert value(registry, name, environment="other") is not None


HOUR_BUDGET = Budget(bytes_per_hour=3_600_000, full_verify_within="24h")


def verify(budget: BlobBudget, digest: str, size: int, now: float) -> None:
    """Download `digest` in full under the budget, as a pull does."""
    assert budget.take(digest, size, now)
    budget.done(digest, True, size, now)


def layer(n: int) -> str:
    return f"sha256:{n:064x}"


VERIFIED = "registry_canary_budget_verified_bytes_total"


class TestMetricsSinkBudget:
    def test_every_gauge_says_where_the_budget_stands(self) -> None:
        """Settings, measured bytes, the oldest verification's age and whether it keeps up are
        exported per environment."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        first_seen = time.time() - 100
        budget = BlobBudget(HOUR_BUDGET, hold=240, now=first_seen)
        verify(budget, layer(1), 1000, first_seen)
        budget.take(layer(2), 3000, first_seen)
        before = time.time()
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        after = time.time()
        assert value(registry, "registry_canary_budget_bytes_per_hour", **LOCAL) == 3_600_000
        assert (
            value(registry, "registry_canary_budget_full_verify_within_seconds", **LOCAL) == 86400.0
        )
        assert value(registry, "registry_canary_budget_catalog_bytes", **LOCAL) == 4000.0
        assert value(registry, VERIFIED, **LOCAL) == 1000.0
        age = value(
            registry, "registry_canary_budget_oldest_full_verification_age_seconds", **LOCAL
        )
        assert age is not None
        assert before - first_seen <= age <= after - first_seen
        assert value(registry, "registry_canary_budget_sufficient", **LOCAL) == 1.0

    def test_a_budget_that_cannot_keep_up_is_not_sufficient(self) -> None:
        """A layer larger than bytes_per_hour can never be verified: sufficient is 0."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        budget = BlobBudget(HOUR_BUDGET, hold=240, now=time.time())
        assert not budget.take(layer(1), 4_000_000, time.time())
        sink.budget("local", HOUR_BUDGET, budget, sufficient=budget.shortfall(120.0) is None)
        assert value(registry, "registry_canary_budget_sufficient", **LOCAL) == 0.0

    def test_no_layer_measured_means_no_age(self) -> None:
        """With no layer measured (any more) the age series is absent rather than 0."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        now = time.time()
        budget = BlobBudget(HOUR_BUDGET, hold=240, now=now)
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        age = "registry_canary_budget_oldest_full_verification_age_seconds"
        assert value(registry, age, **LOCAL) is None
        verify(budget, layer(1), 1000, now)
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        assert value(registry, age, **LOCAL) is not None
        budget.forget_except(())  # no image has the layer any more
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        assert value(registry, age, **LOCAL) is None
        assert value(registry, "registry_canary_budget_catalog_bytes", **LOCAL) == 0.0

    def test_verified_bytes_count_by_the_difference(self) -> None:
        """Each export adds only what the budget verified since the last one."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        now = time.time()
        budget = BlobBudget(HOUR_BUDGET, hold=240, now=now)
        verify(budget, layer(1), 1000, now)
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        assert value(registry, VERIFIED, **LOCAL) == 1000.0
        verify(budget, layer(2), 500, now)
        sink.budget("local", HOUR_BUDGET, budget, sufficient=True)
        assert value(registry, VERIFIED, **LOCAL) == 1500.0

    @pytest.mark.parametrize(("new_bytes", "expected"), [(300, 1300.0), (1500, 2500.0)])
    def test_a_new_budget_counts_all_of_its_bytes(self, new_bytes: int, expected: float) -> None:
        """A budget restarted by a reload adds all of its verified bytes, whether it verified
        fewer or more than the old one had by its last export: the counter never goes back."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        now = time.time()
        old = BlobBudget(HOUR_BUDGET, hold=240, now=now)
        verify(old, layer(1), 1000, now)
        sink.budget("local", HOUR_BUDGET, old, sufficient=True)
        new = BlobBudget(HOUR_BUDGET, hold=240, now=now)
        verify(new, layer(2), new_bytes, now)
        sink.budget("local", HOUR_BUDGET, new, sufficient=True)
        assert value(registry, VERIFIED, **LOCAL) == expected

    def test_forgotten_environments_lose_their_gauges(self) -> None:
        """Environments no longer under a budget lose every budget gauge; the others keep theirs."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        now = time.time()
        for environment in ("local", "other"):
            budget = BlobBudget(HOUR_BUDGET, hold=240, now=now)
            budget.take(layer(1), 1000, now)
            sink.budget(environment, HOUR_BUDGET, budget, sufficient=True)
        sink.forget_budgets_except({"other"})
        gauges = (
            "registry_canary_budget_bytes_per_hour",
            "registry_canary_budget_full_verify_within_seconds",
            "registry_canary_budget_catalog_bytes",
            "registry_canary_budget_oldest_full_verification_age_seconds",
            "registry_canary_budget_sufficient",
        )
        for name in gauges:
            assert value(registry, name, **LOCAL) is None, name
            assert value(registry, name, environment="other") is not None, name


class TestStateSinkControl:
    def test_the_last_round_of_each_environment_is_kept(self) -> None:
        """controls() gives each environment's latest round as JSON with when it finished."""
        state = StateSink()
        assert state.controls() == {}
        before = datetime.now(UTC)
        state.control(control_result(), 140.0)
        failed = control_result(Outcome.BLOB_UNKNOWN, failed_step=ControlStep.PULL)
        state.control(failed, 140.0)
        state.control(control_result(environment="other"), 140.0)
        controls = state.controls()
        assert set(controls) == {"local", "other"}
        local = controls["local"]
        finished = local.pop("finished_at")
        assert local == failed.to_dict()
        assert finished.endswith("Z")
        assert datetime.fromisoformat(finished) >= before
        assert controls["other"]["ok"] is True

    def test_forget_control_drops_only_that_environment(self) -> None:
        """Forgetting an environment's control removes its round; unknown names are ignored."""
        state = StateSink()
        state.control(control_result(), 140.0)
        state.control(control_result(environment="other"), 140.0)
        state.forget_control("local")
        state.forget_control("never-had-one")
        assert set(state.controls()) == {"other"}


class TestLogSinkControl:
    def test_a_good_round_is_one_info_line(self) -> None:
        """A good round logs one control_probed line at info, without failure fields."""
        with structlog.testing.capture_logs() as logs:
            LogSink(structlog.get_logger("test")).control(control_result(), 140.0)
        assert logs == [
            {
                "event": "control_probed",
                "log_level": "info",
                "environment": "local",
                "repository": "canary/control",
                "tag": "registry-canary-control-1682942400-0a1b2c3d",
                "outcome": "ok",
                "durations": {"push": 0.25, "pull": 0.5, "delete": 0.125},
                "deleted": True,
                "writes": 4,
            }
        ]

    def test_a_failed_pull_back_is_a_warning_with_its_failures(self) -> None:
        """A round whose pull back failed logs one warning line naming the step, each failed
        request of the pull and the evidence."""
        pull = result("canary/control", Outcome.BLOB_UNKNOWN)
        failed = control_result(
            Outcome.BLOB_UNKNOWN, failed_step=ControlStep.PULL, deleted=False, pull=pull
        )
        with structlog.testing.capture_logs() as logs:
            LogSink(structlog.get_logger("test")).control(failed, 140.0)
        [line] = logs
        assert (line["event"], line["log_level"]) == ("control_probed", "warning")
        assert line["outcome"] == "blob_unknown"
        assert line["failed_step"] == "pull"
        assert line["deleted"] is False
        assert line["detail"] == "HTTP 404 BLOB_UNKNOWN on the pull back"
        assert [(f["kind"], f["outcome"], f["detail"]) for f in line["failures"]] == [
            ("config", "blob_unknown", "HTTP 404 BLOB_UNKNOWN")
        ]

    def test_a_failed_push_has_no_pull_failures(self) -> None:
        """A round that failed before any pull names its step and evidence, and lists no pull
        failures."""
        failed = control_result(Outcome.TIMEOUT, failed_step=ControlStep.PUSH, deleted=None)
        with structlog.testing.capture_logs() as logs:
            LogSink(structlog.get_logger("test")).control(failed, 140.0)
        [line] = logs
        assert line["log_level"] == "warning"
        assert line["failed_step"] == "push"
        assert line["deleted"] is None
        assert "failures" not in line
        assert line["detail"] == "HTTP 404 BLOB_UNKNOWN on the pull back"
