"""Compares what each environment serves for the same catalog tag: healthy in one and failing in
another, or a different manifest, tells a bad deploy in one environment from a broken image."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def differences(images: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The catalog tags whose environments disagree, from /status image entries.

    A tag is listed when it verified in one environment and failed in another, or when its
    environments serve different manifests; tags probed in one environment only never are.
    """
    by_tag: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for image in images:
        by_tag.setdefault((image["repository"], image["tag"]), []).append(image)
    found = []
    for (repository, tag), entries in by_tag.items():
        probed = [e for e in entries if e.get("ok") is not None]
        if len(probed) < 2:
            continue
        healthy = sorted(e["environment"] for e in probed if e["ok"])
        failing = sorted(e["environment"] for e in probed if not e["ok"])
        served = {e["environment"]: _served(e) for e in probed}
        digests = {d for d in served.values() if d is not None}
        reasons = []
        if healthy and failing:
            reasons.append("health")
        if len(digests) > 1:
            reasons.append("digest")
        if not reasons:
            continue
        found.append(
            {
                "repository": repository,
                "tag": tag,
                "reasons": reasons,
                "healthy_in": healthy,
                "failing_in": failing,
                "outcomes": {e["environment"]: e["outcome"] for e in probed},
                "served_digests": served,
            }
        )
    return found


def _served(image: Mapping[str, Any]) -> str | None:
    result = image.get("result") or {}
    manifest = result.get("manifest") or {}
    digest: str | None = manifest.get("served_digest")
    return digest
