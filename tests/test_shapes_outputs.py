"""What users read about skipped data and referrers: metrics, the log line, the text, JSON and
JUnit reports, and the status page."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from canary.config import Target
from canary.diagnosis import Kind, classify
from canary.junit import failure_message, render_junit
from canary.metrics import Metrics
from canary.report import render_json, render_text
from canary.results import (
    BlobKind,
    BlobResult,
    Evidence,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    ReferrerSource,
    Skipped,
    SkipReason,
)
from canary.sinks.logs import LogSink
from canary.sinks.metrics import MetricsSink
from canary.statuspage import render
from tests.conftest import to_config

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SUBJECT = "sha256:" + "a" * 64
SIGNATURE = "sha256:" + "5" * 64
FOREIGN = "sha256:" + "f" * 64
ATTESTATION = "sha256:" + "e" * 64
ENTRY = {"environment": "local", "repository": "canary/app", "tag": "v1"}


def targets(**image: Any) -> list[Target]:
    document = {
        "environments": [{"name": "local", "url": "http://127.0.0.1:5000"}],
        "images": [{"repository": "canary/app", "tag": "v1", **image}],
    }
    return list(to_config(document).targets())


def blob(digest: str, outcome: Outcome = Outcome.OK, **extra: Any) -> BlobResult:
    evidence = None if outcome is Outcome.OK else Evidence("HTTP 404 BLOB_UNKNOWN", status=404)
    fields: dict[str, Any] = {
        "digest": digest,
        "kind": BlobKind.LAYER,
        "platform": "windows/amd64",
        "outcome": outcome,
        "hop": Hop.REGISTRY,
        "status": 200 if outcome is Outcome.OK else 404,
        "bytes": 10,
        "first_outcome": outcome,
        "duration_seconds": 0.01,
        "evidence": evidence,
    }
    fields.update(extra)
    return BlobResult(**fields)


def shaped(
    *,
    requirement: bool | None = True,
    referrer_outcome: Outcome = Outcome.OK,
    lost_signature_blob: bool = False,
) -> ImageResult:
    """A Windows image with a foreign layer skipped, an attestation skipped, and a signature."""
    referrers: tuple[ManifestResult, ...] = (
        ManifestResult(
            SIGNATURE,
            Outcome.OK,
            200,
            artifact_type="application/vnd.oci.image.config.v1+json",
            found_via=ReferrerSource.COSIGN_TAG,
        ),
    )
    if requirement is False:
        referrers = (
            ManifestResult(
                None,
                Outcome.REFERRER_MISSING,
                None,
                first_outcome=Outcome.REFERRER_MISSING,
                artifact_type="signature",
                evidence=Evidence("no referrer of the image is a signature (0 found, ...)"),
            ),
        )
    signature_blob = blob(
        "sha256:" + "6" * 64,
        Outcome.BLOB_UNKNOWN if lost_signature_blob else Outcome.OK,
        referrer=SIGNATURE,
    )
    failed = (
        Outcome.BLOB_UNKNOWN
        if lost_signature_blob
        else referrer_outcome
        if requirement is not False
        else Outcome.REFERRER_MISSING
    )
    return ImageResult(
        environment="local",
        repository="canary/app",
        tag="v1",
        outcome=failed,
        manifests=(ManifestResult(SUBJECT, Outcome.OK, 200),),
        blobs=(blob("sha256:" + "c" * 64), blob("sha256:" + "d" * 64), signature_blob),
        published=(),
        started_at=STARTED,
        duration_seconds=0.2,
        skipped=(
            Skipped(FOREIGN, "layer", "windows/amd64", SkipReason.NON_DISTRIBUTABLE, "foreign"),
            Skipped(ATTESTATION, "manifest", None, SkipReason.ATTESTATION, "attestation"),
        ),
        referrers=referrers,
        referrers_checked=True,
        requirements=(("signature", requirement),),
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class TestMetrics:
    def test_skipped_referrers_and_requirements(self) -> None:
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets(referrers={"require": ["signature"]}))
        sink.consume(shaped())
        skipped = "registry_canary_skipped_total"
        layer = {"environment": "local", "kind": "layer", "reason": "non_distributable"}
        manifest = {"environment": "local", "kind": "manifest", "reason": "attestation"}
        assert value(registry, skipped, **layer) == 1.0
        assert value(registry, skipped, **manifest) == 1.0
        assert value(registry, "registry_canary_image_referrers", **ENTRY) == 1.0
        met = "registry_canary_image_referrer_requirement_met"
        assert value(registry, met, **ENTRY, requirement="signature") == 1.0
        ok_manifests = dict(ENTRY, outcome="ok")
        assert value(registry, "registry_canary_manifest_fetches_total", **ok_manifests) == 2.0
        # Unknown (the registry could not list referrers) leaves the last known state alone.
        sink.consume(shaped(requirement=None, referrer_outcome=Outcome.UNAVAILABLE))
        assert value(registry, met, **ENTRY, requirement="signature") == 1.0
        sink.consume(shaped(requirement=False))
        assert value(registry, met, **ENTRY, requirement="signature") == 0.0
        missing = dict(ENTRY, outcome="referrer_missing")
        assert value(registry, "registry_canary_manifest_fetches_total", **missing) is None

    def test_a_lost_signature_blob_counts_as_an_unknown_blob(self) -> None:
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets(referrers={"require": ["signature"]}))
        sink.consume(shaped(lost_signature_blob=True))
        assert value(registry, "registry_canary_image_blobs_unknown", **ENTRY) == 1.0

    def test_a_reload_that_drops_referrers_drops_their_series(self) -> None:
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets(referrers={"require": ["signature"]}))
        sink.consume(shaped())
        sink.track(targets())
        met = "registry_canary_image_referrer_requirement_met"
        assert value(registry, met, **ENTRY, requirement="signature") is None
        assert value(registry, "registry_canary_image_referrers", **ENTRY) is None

    def test_foreign_source_losses_are_not_the_registrys(self) -> None:
        """A blob unknown at a foreign layer's source is no unknown blob of the registry."""
        registry = CollectorRegistry()
        sink = MetricsSink(Metrics(registry))
        sink.track(targets())
        lost = replace(
            shaped(),
            outcome=Outcome.BLOB_UNKNOWN,
            blobs=(blob(FOREIGN, Outcome.BLOB_UNKNOWN, hop=Hop.FOREIGN),),
            skipped=(),
        )
        sink.consume(lost)
        assert value(registry, "registry_canary_image_blobs_unknown", **ENTRY) is None
        assert classify(lost) is Kind.OTHER


class TestLogLine:
    def test_skipped_and_referrers_in_the_canonical_line(self) -> None:
        with structlog.testing.capture_logs() as logs:
            LogSink(structlog.get_logger()).consume(shaped(requirement=False))
        (line,) = logs
        assert line["skipped"] == {"attestation": 1, "non_distributable": 1}
        assert line["referrers"] == 0
        assert line["requirements"] == {"signature": False}
        assert line["verified_blobs"] == 3
        (failure,) = line["failures"]
        assert failure["kind"] == "referrer"
        assert failure["artifact_type"] == "signature"
        assert failure["outcome"] == "referrer_missing"


class TestReports:
    def test_text(self) -> None:
        text = render_text([shaped(requirement=False)])
        header = text.splitlines()[0].split()
        assert header[4:8] == ["BLOBS", "OK", "REFERRERS", "PUBLISHED"]
        assert "3/3 +2 skipped" in text
        assert "0 (signature MISSING)" in text
        assert (
            "referrer signature: referrer_missing via registry (confirmed on a second fetch)"
            in text
        )
        assert f"layer {FOREIGN}: non_distributable: foreign" in text
        assert f"manifest {ATTESTATION}: attestation: attestation" in text

    def test_text_without_referrers_has_no_referrer_column(self) -> None:
        plain = replace(shaped(), referrers=(), referrers_checked=False, requirements=())
        assert "REFERRERS" not in render_text([plain])

    def test_json(self) -> None:
        (document,) = json.loads(render_json([shaped(lost_signature_blob=True)]))
        assert document["verified_blobs"] == 2
        assert document["requirements"] == {"signature": True}
        assert document["referrers"][0]["found_via"] == "cosign_tag"
        assert [s["reason"] for s in document["skipped"]] == ["non_distributable", "attestation"]
        lost = [b for b in document["blobs"] if b["outcome"] != "ok"]
        assert [b["referrer"] for b in lost] == [SIGNATURE]

    def test_junit(self) -> None:
        missing = shaped(requirement=False)
        assert failure_message(missing) == "referrer_missing: 1 of 1 referrer confirmed missing"
        report = render_junit([missing])
        assert "referrers: 0 (signature MISSING)" in report
        assert "not fetched (does not fail the pull):" in report


class TestStatusPage:
    def test_cell_and_failing_requests(self) -> None:
        missing = shaped(requirement=False)
        image = {
            "environment": "local",
            "repository": "canary/app",
            "tag": "v1",
            "ok": False,
            "outcome": str(missing.outcome),
            "last_probe": "2026-01-02T03:04:05Z",
            "last_success": None,
            "published": [],
            "result": missing.to_dict(),
        }
        page = render({"images": [image], "environments": [{"name": "local"}]}, STARTED)
        assert "2 skipped (attestation, non_distributable)" in page
        assert "0 referrers: signature missing" in page
        assert "<td>referrer signature</td>" in page
