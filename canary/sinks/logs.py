"""One canonical log line per image pull and per control round, with the evidence of whatever
failed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from canary.config import Target
from canary.results import BlobResult, ControlResult, ImageResult, ManifestResult


def _failure(item: ManifestResult | BlobResult) -> dict[str, Any]:
    kind = str(item.kind) if isinstance(item, BlobResult) else "manifest"
    if isinstance(item, ManifestResult) and item.is_referrer:
        kind = "referrer"
    fields: dict[str, Any] = {
        "outcome": str(item.outcome),
        "status": item.status,
        "digest": item.digest,
        "kind": kind,
        "hop": str(item.hop),
        "first_outcome": str(item.first_outcome or item.outcome),
        "request_id": item.request_id,
    }
    if item.platform:
        fields["platform"] = item.platform
    if isinstance(item, ManifestResult) and item.artifact_type:
        fields["artifact_type"] = item.artifact_type
    if isinstance(item, BlobResult) and item.referrer:
        fields["referrer"] = item.referrer
    if item.evidence is not None:
        fields["detail"] = item.evidence.detail
        fields["request_id"] = fields["request_id"] or item.evidence.request_id
    return fields


class LogSink:
    def __init__(self, logger: Any) -> None:
        self._log = logger

    def track(self, targets: Sequence[Target]) -> None:
        pass  # logs keep no per-entry state

    def consume(self, result: ImageResult) -> None:
        fields: dict[str, Any] = {
            "environment": result.environment,
            "repository": result.repository,
            "tag": result.tag,
            "outcome": str(result.outcome),
            "duration_seconds": round(result.duration_seconds, 4),
            "blobs": len(result.blobs),
            "verified_blobs": result.verified_blobs,
            "bytes": sum(b.bytes for b in result.blobs),
            "published": {str(p.source): p.to_dict()["timestamp"] for p in result.published},
            "published_status": {str(p.source): str(p.status) for p in result.published},
        }
        if result.manifests and result.manifests[0].digest:
            fields["digest"] = result.manifests[0].digest
        if result.skipped:
            reasons = Counter(str(s.reason) for s in result.skipped)
            fields["skipped"] = dict(sorted(reasons.items()))
        if result.referrers_checked:
            fields["referrers"] = result.referrers_read
            if result.requirements:
                fields["requirements"] = dict(result.requirements)
        if not result.ok:
            fields["failures"] = [_failure(item) for item in result.failures]
            if result.evidence is not None:
                fields["detail"] = result.evidence.detail
            self._log.warning("image_probed", **fields)
        else:
            self._log.info("image_probed", **fields)

    def control(self, result: ControlResult, stale_after: float) -> None:
        fields: dict[str, Any] = {
            "environment": result.environment,
            "repository": result.repository,
            "tag": result.tag,
            "outcome": str(result.outcome),
            "durations": {str(step): round(seconds, 4) for step, seconds in result.durations},
            "deleted": result.deleted,
            "writes": len(result.writes),
        }
        if result.ok and result.failed_step is None:
            self._log.info("control_probed", **fields)
            return
        fields["failed_step"] = str(result.failed_step) if result.failed_step else None
        if result.pull is not None and result.pull.failures:
            fields["failures"] = [_failure(item) for item in result.pull.failures]
        if result.evidence is not None:
            fields["detail"] = result.evidence.detail
        self._log.warning("control_probed", **fields)

    def forget_control(self, environment: str) -> None:
        pass
