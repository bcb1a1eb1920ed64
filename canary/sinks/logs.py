"""One canonical log line per image pull, with the evidence of whatever failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canary.config import Target
from canary.results import BlobResult, ImageResult, ManifestResult


def _failure(item: ManifestResult | BlobResult) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "outcome": str(item.outcome),
        "status": item.status,
        "digest": item.digest,
        "kind": str(item.kind) if isinstance(item, BlobResult) else "manifest",
        "hop": str(item.hop),
        "first_outcome": str(item.first_outcome or item.outcome),
        "request_id": item.request_id,
    }
    if item.platform:
        fields["platform"] = item.platform
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
            "bytes": sum(b.bytes for b in result.blobs),
            "published": {str(p.source): p.to_dict()["timestamp"] for p in result.published},
            "published_status": {str(p.source): str(p.status) for p in result.published},
        }
        if result.manifests and result.manifests[0].digest:
            fields["digest"] = result.manifests[0].digest
        if not result.ok:
            fields["failures"] = [_failure(item) for item in result.failures]
            if result.evidence is not None:
                fields["detail"] = result.evidence.detail
            self._log.warning("image_probed", **fields)
        else:
            self._log.info("image_probed", **fields)
