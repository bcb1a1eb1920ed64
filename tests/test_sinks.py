"""Sinks: results into Prometheus series, the state behind /status, and canonical log lines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry

from canary.config import Target
from canary.metrics import Metrics
from canary.results import (
    BlobKind,
    BlobResult,
    Evidence,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    PublishedResult,
    PublishedStatus,
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
