"""What one pull has seen so far, kept outside its task so a timeout loses nothing, and how that
becomes the pull's outcome."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from canary.budget import BlobBudget
from canary.config import Target
from canary.published.pulled import LeafDates, Position
from canary.registry.client import Where
from canary.registry.errors import safe_url
from canary.registry.media import ImageManifest, Index
from canary.registry.referrers import Candidate
from canary.results import (
    BlobKind,
    BlobResult,
    Evidence,
    Fetch,
    ManifestResult,
    Outcome,
    Skipped,
    SkipReason,
)


# eq=False: each request is its own entry, however alike two are.
@dataclass(slots=True, eq=False)
class InFlight:
    """A manifest request under way, so that a timeout can say which ones it cut off."""

    expected: str | None
    platform: str | None
    referrer: Candidate | None


@dataclass
class PullState:
    """What one pull has seen so far; kept outside the task so a timeout loses nothing."""

    target: Target
    manifests: list[ManifestResult] = field(default_factory=list)
    blobs: dict[str, BlobResult] = field(default_factory=dict)
    in_flight: dict[str, tuple[BlobKind, str | None, float, Where]] = field(default_factory=dict)
    manifests_in_flight: set[InFlight] = field(default_factory=set)
    # Per image manifest reached, by its position in the walk: what its config and annotations
    # say of its date, so the date never depends on timing.
    leaves: dict[Position, LeafDates] = field(default_factory=dict)
    index_created: str | None = None  # the top index's created annotation
    reached: list[str | None] = field(default_factory=list)  # platforms of the manifests reached
    visited: set[str] = field(default_factory=set)  # manifest digests, each pulled once
    # Left out on purpose, by digest: once however many manifests name it.
    skipped: dict[str, Skipped] = field(default_factory=dict)
    referrers: list[ManifestResult] = field(default_factory=list)
    requirements: tuple[tuple[str, bool | None], ...] = ()
    reading_referrers: bool = False  # the image is done; its referrers are being read
    referrers_checked: bool = False  # they were, to the end
    budget: BlobBudget | None = None
    layers: set[str] = field(default_factory=set)  # every layer the manifests name
    top_is_index: bool = False

    def skip(self, skipped: Skipped) -> None:
        self.skipped.setdefault(skipped.digest, skipped)


async def confirmed(fetch: Callable[[], Awaitable[Fetch]], delay: float) -> tuple[Fetch, Fetch]:
    """Fetch, and fetch again after `delay` when the first answer says data is lost."""
    first = await fetch()
    if not first.outcome.is_data_loss:
        return first, first
    await asyncio.sleep(delay)
    return first, await fetch()


def read_every_manifest(pull: PullState) -> bool:
    return bool(pull.manifests) and all(m.outcome is Outcome.OK for m in pull.manifests)


def verified_nothing(pull: PullState) -> bool:
    """A pull that failed nowhere and still verified no blob: it must never pass as ok."""
    if any(m.outcome is not Outcome.OK for m in (*pull.manifests, *pull.referrers)):
        return False
    if any(blob.outcome is not Outcome.OK for blob in pull.blobs.values()):
        return False
    return not any(blob.referrer is None for blob in pull.blobs.values())


_SKIPPED = {
    SkipReason.ATTESTATION: "attestation manifest(s)",
    SkipReason.NON_DISTRIBUTABLE: "non-distributable layer(s)",
    SkipReason.EMPTY_LAYER: "empty schema 1 layer(s)",
}


def why_nothing(pull: PullState) -> str:
    if not pull.reached:
        what = "the index names no image manifest to pull"
        if pull.target.platforms != "all":
            what += f" for {', '.join(pull.target.platforms)}"
    else:
        what = f"no blob of the {len(pull.reached)} image manifest(s) reached was verified"
    counts = Counter(s.reason for s in pull.skipped.values())
    reasons = [f"{counts[r]} {what} skipped" for r, what in _SKIPPED.items() if counts[r]]
    return f"nothing verified: {what}" + (f" ({', '.join(reasons)})" if reasons else "")


def stage_of(pull: PullState) -> str:
    """What a timed-out pull was waiting for."""
    if pull.reading_referrers:
        return "referrers"
    if pull.in_flight:
        return "blobs"
    return "platform manifests" if pull.manifests else "manifest"


def time_out(pull: PullState, evidence: Evidence) -> None:
    now = time.monotonic()
    for waiting in pull.manifests_in_flight:
        cut = ManifestResult(
            digest=waiting.expected,
            outcome=Outcome.TIMEOUT,
            status=None,
            platform=waiting.platform,
            evidence=evidence,
        )
        if waiting.referrer is None:
            pull.manifests.append(cut)
        else:
            pull.referrers.append(as_referrer(cut, waiting.referrer, None))
    pull.manifests_in_flight.clear()
    if not pull.manifests:
        pull.manifests.append(
            ManifestResult(digest=None, outcome=Outcome.TIMEOUT, status=None, evidence=evidence)
        )
    for digest, (kind, platform, began, where) in pull.in_flight.items():
        pull.blobs[digest] = BlobResult(
            digest=digest,
            kind=kind,
            platform=platform,
            outcome=Outcome.TIMEOUT,
            hop=where.hop,
            status=None,
            bytes=0,
            first_outcome=Outcome.TIMEOUT,
            duration_seconds=now - began,
            evidence=replace(evidence, url=safe_url(where.url)),
        )
    pull.in_flight.clear()


def overall(pull: PullState, stopped_by: Outcome | None) -> Outcome:
    failures: list[Outcome] = [
        m.outcome for m in (*pull.manifests, *pull.referrers) if m.outcome is not Outcome.OK
    ]
    failures += [b.outcome for b in pull.blobs.values() if b.outcome is not Outcome.OK]
    if stopped_by is not None and stopped_by not in failures:
        failures.append(stopped_by)
    if not failures:
        return Outcome.OK
    # Data loss is what pages, so it names the image's outcome even when it came second.
    return next((o for o in failures if o.is_data_loss), failures[0])


def as_referrer(
    result: ManifestResult, candidate: Candidate, parsed: ImageManifest | Index | None
) -> ManifestResult:
    """A referrer's manifest result, with its artifact type: as listed, else as the manifest
    says (its artifactType, else its config's media type, as the OCI 1.1 spec defines it)."""
    artifact_type = candidate.artifact_type
    if artifact_type is None and isinstance(parsed, ImageManifest):
        config = parsed.config.media_type if parsed.config is not None else None
        artifact_type = parsed.artifact_type or config
    return replace(result, artifact_type=artifact_type, found_via=candidate.found_via)
