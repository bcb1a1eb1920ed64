"""Every Prometheus metric the canary exports, defined once on an injected CollectorRegistry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from canary import __version__

PREFIX = "registry_canary_"
ENTRY = ("environment", "repository", "tag")
# From a tiny HEAD on loopback to a multi-GiB verified pull over a slow link.
PULL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BLOB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The metric objects; sinks update them, nothing else creates metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.blob_fetches = Counter(
            PREFIX + "blob_fetches",
            "Blob fetches by confirmed outcome.",
            [*ENTRY, "kind", "outcome"],
            registry=registry,
        )
        self.manifest_fetches = Counter(
            PREFIX + "manifest_fetches",
            "Manifest and index fetches by confirmed outcome.",
            [*ENTRY, "outcome"],
            registry=registry,
        )
        self.image_pulls = Counter(
            PREFIX + "image_pulls",
            "Completed image pulls, whatever their outcome.",
            ENTRY,
            registry=registry,
        )
        self.image_pull_failures = Counter(
            PREFIX + "image_pull_failures",
            "Completed image pulls that did not verify; the reason is in the fetch counters.",
            ENTRY,
            registry=registry,
        )
        self.image_blobs_unknown = Gauge(
            PREFIX + "image_blobs_unknown",
            "Blobs of the image confirmed unknown (404 BLOB_UNKNOWN twice); back to 0 only "
            "when a pull verifies every blob.",
            ENTRY,
            registry=registry,
        )
        self.image_probe_interval = Gauge(
            PREFIX + "image_probe_interval_seconds",
            "The configured interval between pulls of the image.",
            ENTRY,
            registry=registry,
        )
        self.blob_rechecks = Counter(
            PREFIX + "blob_rechecks",
            "Blob fetches answered with data loss and fetched again; outcome is the second answer.",
            ["environment", "kind", "first_outcome", "outcome"],
            registry=registry,
        )
        self.image_pull_success = Gauge(
            PREFIX + "image_pull_success",
            "1 if the last completed pull of the image verified, else 0.",
            ENTRY,
            registry=registry,
        )
        self.image_last_probe = Gauge(
            PREFIX + "image_last_probe_timestamp_seconds",
            "When the last pull of the image finished.",
            ENTRY,
            registry=registry,
        )
        self.image_last_success = Gauge(
            PREFIX + "image_last_success_timestamp_seconds",
            "When the last verified pull of the image finished.",
            ENTRY,
            registry=registry,
        )
        self.image_pull_duration = Histogram(
            PREFIX + "image_pull_duration_seconds",
            "Duration of whole image pulls.",
            ["environment"],
            buckets=PULL_BUCKETS,
            registry=registry,
        )
        self.blob_fetch_duration = Histogram(
            PREFIX + "blob_fetch_duration_seconds",
            "Duration of blob fetches, rechecks included.",
            ["environment", "kind"],
            buckets=BLOB_BUCKETS,
            registry=registry,
        )
        self.blob_fetch_bytes = Counter(
            PREFIX + "blob_fetch_bytes",
            "Blob bytes received and verified as far as blob_check allows.",
            ["environment", "kind"],
            registry=registry,
        )
        self.tag_published = Gauge(
            PREFIX + "tag_published_timestamp_seconds",
            "The tag's published date as the source reports it; absent while unknown.",
            [*ENTRY, "source"],
            registry=registry,
        )
        self.tag_published_valid = Gauge(
            PREFIX + "tag_published_date_valid",
            "1 if the source gives a real date that agrees with the pin and the config blob.",
            [*ENTRY, "source"],
            registry=registry,
        )
        self.skipped = Counter(
            PREFIX + "skipped",
            "Manifests and layers pulls left out on purpose, as runtimes do (kind manifest: "
            "attestation; kind layer: non_distributable under foreign_layers: skip, and "
            "empty_layer of schema 1).",
            ["environment", "kind", "reason"],
            registry=registry,
        )
        self.image_referrers = Gauge(
            PREFIX + "image_referrers",
            "Referrers of the image (signatures, attestations, SBOMs) the last pull found and "
            "read; absent unless the image's referrers are checked.",
            ENTRY,
            registry=registry,
        )
        self.referrer_requirement_met = Gauge(
            PREFIX + "image_referrer_requirement_met",
            "1 if a referrer the catalog requires was found, 0 once its absence is confirmed; "
            "unchanged while the registry cannot list referrers.",
            [*ENTRY, "requirement"],
            registry=registry,
        )
        self.probes_skipped = Counter(
            PREFIX + "probes_skipped",
            "Scheduled pulls not started, by reason (overlap: the previous one still ran; "
            "rate_limited: the registry's Retry-After had not passed).",
            ["environment", "reason"],
            registry=registry,
        )
        self.alert_deliveries = Counter(
            PREFIX + "alert_deliveries",
            "Posts of alerts to an Alertmanager, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.alerts_firing = Gauge(
            PREFIX + "alerts_firing",
            "Alerts the daemon itself currently reports as firing to Alertmanager.",
            registry=registry,
        )
        self.environment_backoff_until = Gauge(
            PREFIX + "environment_backoff_until_timestamp_seconds",
            "Until when the registry asked for no requests (429 Retry-After); 0 when it did not.",
            ["environment"],
            registry=registry,
        )
        self.tag_digest_matches_pin = Gauge(
            PREFIX + "tag_digest_matches_pin",
            "1 if the tag serves the catalog's pinned digest, 0 if it serves another or none; "
            "absent for unpinned tags and until known.",
            ENTRY,
            registry=registry,
        )
        self.control_pull_success = Gauge(
            PREFIX + "control_pull_success",
            "1 if the last control round pushed a fresh image and pulled it back verified.",
            ["environment"],
            registry=registry,
        )
        self.control_last_success = Gauge(
            PREFIX + "control_last_success_timestamp_seconds",
            "When a control round last pulled its fresh image back verified.",
            ["environment"],
            registry=registry,
        )
        self.control_duration = Histogram(
            PREFIX + "control_duration_seconds",
            "Duration of the steps of control rounds (push, pull, delete).",
            ["environment", "step"],
            buckets=PULL_BUCKETS,
            registry=registry,
        )
        self.control_writes = Counter(
            PREFIX + "control_writes",
            "Requests with which the control probe changed the registry, by outcome.",
            ["environment", "operation", "outcome"],
            registry=registry,
        )
        self.control_leftovers_removed = Counter(
            PREFIX + "control_leftovers_removed",
            "Control tags left behind by an earlier run (a crash) and removed at start-up.",
            ["environment"],
            registry=registry,
        )
        self.diagnosis = Gauge(
            PREFIX + "diagnosis",
            "1 while the environment's results match the signature (legacy_data_unreadable, "
            "registry_down, storage_unreachable, auth_broken), else 0.",
            ["environment", "signature"],
            registry=registry,
        )
        self.budget_bytes_per_hour = Gauge(
            PREFIX + "budget_bytes_per_hour",
            "The configured budget of layer bytes per hour for full verification.",
            ["environment"],
            registry=registry,
        )
        self.budget_full_verify_within = Gauge(
            PREFIX + "budget_full_verify_within_seconds",
            "The configured longest time between two full verifications of a budgeted layer.",
            ["environment"],
            registry=registry,
        )
        self.budget_catalog_bytes = Gauge(
            PREFIX + "budget_catalog_bytes",
            "Bytes of the distinct layers under blob_check: budget, as measured from manifests.",
            ["environment"],
            registry=registry,
        )
        self.budget_verified_bytes = Counter(
            PREFIX + "budget_verified_bytes",
            "Layer bytes downloaded in full and verified under the budget.",
            ["environment"],
            registry=registry,
        )
        self.budget_oldest_verification_age = Gauge(
            PREFIX + "budget_oldest_full_verification_age_seconds",
            "Age of the oldest full verification among the environment's budgeted layers "
            "(a layer never verified counts from when it was first seen).",
            ["environment"],
            registry=registry,
        )
        self.budget_sufficient = Gauge(
            PREFIX + "budget_sufficient",
            "1 if the budget can verify every measured layer within full_verify_within, else 0.",
            ["environment"],
            registry=registry,
        )
        self.config_reload_ok = Gauge(
            PREFIX + "config_last_reload_successful",
            "1 if the last configuration load succeeded, else 0.",
            registry=registry,
        )
        self.config_reload_time = Gauge(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=registry,
        )
        self.build_info = Gauge(
            PREFIX + "build_info",
            "Always 1; the version is a label.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
