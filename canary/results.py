"""What a probe returns: the closed set of outcomes and immutable, JSON-ready results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """Every way a request of a pull, or a whole pull, can end; metric labels take only these
    values."""

    OK = "ok"
    BLOB_UNKNOWN = "blob_unknown"
    MANIFEST_UNKNOWN = "manifest_unknown"
    NAME_UNKNOWN = "name_unknown"
    MANIFEST_BLOB_UNKNOWN = "manifest_blob_unknown"
    UNAUTHORIZED = "unauthorized"
    DENIED = "denied"
    TOOMANYREQUESTS = "toomanyrequests"
    UNAVAILABLE = "unavailable"
    DIGEST_MISMATCH = "digest_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    INVALID_RESPONSE = "invalid_response"
    # The pull found nothing to verify: every manifest an index lists was skipped or filtered.
    NOTHING_VERIFIED = "nothing_verified"
    # A referrer the catalog requires (a signature, an SBOM) is not among the image's referrers.
    REFERRER_MISSING = "referrer_missing"

    @property
    def is_data_loss(self) -> bool:
        """Stored data is gone or wrong: such outcomes are confirmed before they are reported."""
        return self in _DATA_LOSS


_DATA_LOSS = frozenset(
    {
        Outcome.BLOB_UNKNOWN,
        Outcome.MANIFEST_UNKNOWN,
        Outcome.DIGEST_MISMATCH,
        Outcome.SIZE_MISMATCH,
        Outcome.REFERRER_MISSING,
    }
)


class Hop(StrEnum):
    """Which server answered: the registry itself, storage/CDN reached through a redirect, or
    the source a non-distributable layer names in its `urls`."""

    REGISTRY = "registry"
    STORAGE = "storage"
    FOREIGN = "foreign"


class BlobKind(StrEnum):
    CONFIG = "config"
    LAYER = "layer"


class SkipReason(StrEnum):
    """Why a pull did not fetch something a manifest names, as a runtime would not either."""

    ATTESTATION = "attestation"  # an attestation manifest in an index
    NON_DISTRIBUTABLE = "non_distributable"  # a foreign layer, fetched from its urls
    EMPTY_LAYER = "empty_layer"  # a schema 1 layer its history marks empty (throwaway)


class ReferrerSource(StrEnum):
    """Where a referrer was found: the OCI 1.1 referrers API, its tag-schema fallback
    (`sha256-<hex>`), or cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom`)."""

    API = "api"
    TAG_SCHEMA = "tag_schema"
    COSIGN_TAG = "cosign_tag"


class PublishedStatus(StrEnum):
    OK = "ok"
    MISSING = "missing"  # no date, or the source could not be read
    DEFAULT = "default"  # a value no long-lived image can have: zero, future, too recent
    MISMATCH = "mismatch"  # a real-looking date that differs from the pin or the config blob


@dataclass(frozen=True, slots=True)
class Evidence:
    """What identifies a failed request to the people who run the registry; never holds a secret."""

    detail: str
    url: str = ""
    status: int | None = None
    code: str | None = None
    message: str | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "url": self.url,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "request_id": self.request_id,
        }


@dataclass(frozen=True, slots=True)
class Fetch:
    """The end of one request (after redirects), as the registry client reports it."""

    outcome: Outcome
    hop: Hop
    status: int | None
    bytes: int = 0
    request_id: str | None = None
    evidence: Evidence | None = None
    # The digest of what was served, when the body arrived whole (manifests only).
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestResult:
    digest: str | None
    outcome: Outcome
    status: int | None
    media_type: str | None = None
    platform: str | None = None
    first_outcome: Outcome | None = None
    evidence: Evidence | None = None
    hop: Hop = Hop.REGISTRY
    request_id: str | None = None
    # What the registry served, which differs from `digest` (the pin) on a digest mismatch.
    served_digest: str | None = None
    # Referrers only: the artifact type (or, for a missing one, the requirement's name), and
    # where it was listed.
    artifact_type: str | None = None
    found_via: ReferrerSource | None = None

    @property
    def is_referrer(self) -> bool:
        return self.found_via is not None or self.artifact_type is not None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "digest": self.digest,
            "served_digest": self.served_digest,
            "outcome": str(self.outcome),
            "first_outcome": str(self.first_outcome or self.outcome),
            "hop": str(self.hop),
            "status": self.status,
            "request_id": self.request_id,
            "media_type": self.media_type,
            "platform": self.platform,
            "evidence": self.evidence.to_dict() if self.evidence else None,
        }
        if self.is_referrer:
            document["artifact_type"] = self.artifact_type
            document["found_via"] = str(self.found_via) if self.found_via else None
        return document


@dataclass(frozen=True, slots=True)
class BlobResult:
    digest: str
    kind: BlobKind
    platform: str | None
    outcome: Outcome
    hop: Hop
    status: int | None
    bytes: int
    first_outcome: Outcome
    duration_seconds: float
    request_id: str | None = None
    evidence: Evidence | None = None
    referrer: str | None = None  # the digest of the referrer manifest that names this blob

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "kind": str(self.kind),
            "referrer": self.referrer,
            "platform": self.platform,
            "outcome": str(self.outcome),
            "hop": str(self.hop),
            "status": self.status,
            "bytes": self.bytes,
            "first_outcome": str(self.first_outcome),
            "request_id": self.request_id,
            "duration_seconds": round(self.duration_seconds, 6),
            "evidence": self.evidence.to_dict() if self.evidence else None,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something a manifest names that the pull did not fetch, on purpose, and why."""

    digest: str
    kind: str  # "manifest" or "layer"
    platform: str | None
    reason: SkipReason
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "kind": self.kind,
            "platform": self.platform,
            "reason": str(self.reason),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class PublishedResult:
    """A tag's published date as one source reports it, judged against the pin."""

    timestamp: datetime | None
    source: str
    status: PublishedStatus
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        stamp = None
        if self.timestamp is not None:
            stamp = self.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return {
            "timestamp": stamp,
            "source": self.source,
            "status": str(self.status),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One pull of one catalog image from one environment."""

    environment: str
    repository: str
    tag: str
    outcome: Outcome
    manifests: tuple[ManifestResult, ...]
    blobs: tuple[BlobResult, ...]
    published: tuple[PublishedResult, ...]  # one per configured source, in config order
    started_at: datetime
    duration_seconds: float
    evidence: Evidence | None = None
    pinned_digest: str | None = None  # the catalog's pin, if it has one
    skipped: tuple[Skipped, ...] = ()
    # With referrers checked: each referrer's manifest (its blobs are in `blobs`), and a
    # referrer_missing entry per requirement that none of them met.
    referrers: tuple[ManifestResult, ...] = ()
    # (requirement, met) for each referrer the catalog requires, when referrers were checked.
    referrers_checked: bool = False  # whether this pull got as far as listing referrers
    # None: unknown, because the registry could not list referrers.
    requirements: tuple[tuple[str, bool | None], ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def key(self) -> tuple[str, str, str]:
        """(environment, repository, tag): as `Target.key` names the target pulled."""
        return self.environment, self.repository, self.tag

    @property
    def served_digest(self) -> str | None:
        """The digest of the manifest or index the tag resolved to, when the body arrived."""
        top = self.manifests[0] if self.manifests else None
        return top.served_digest if top is not None else None

    @property
    def matches_pin(self) -> bool | None:
        """Whether the tag serves the pinned digest; None without a pin or while unknown. A tag
        that is gone serves nothing, which is not the pin."""
        if self.pinned_digest is None or not self.manifests:
            return None
        top = self.manifests[0]
        if top.served_digest is not None:
            return top.served_digest == self.pinned_digest
        if top.outcome in (Outcome.MANIFEST_UNKNOWN, Outcome.NAME_UNKNOWN):
            return False
        return None

    @property
    def blobs_unknown(self) -> int | None:
        """How many blobs this pull confirmed unknown; None if it can't tell that none are,
        because it failed before it verified every blob."""
        # A foreign layer's source is not the registry: its loss never counts as the registry's.
        count = sum(
            1
            for blob in self.blobs
            if blob.outcome is Outcome.BLOB_UNKNOWN and blob.hop is not Hop.FOREIGN
        )
        return count if count or self.ok else None

    @property
    def referrers_read(self) -> int:
        """How many of the image's referrers the pull found and read."""
        return sum(1 for referrer in self.referrers if referrer.outcome is Outcome.OK)

    @property
    def verified_blobs(self) -> int:
        """How many blobs the pull fetched and verified as far as blob_check allows."""
        return sum(1 for blob in self.blobs if blob.outcome is Outcome.OK)

    @property
    def failures(self) -> tuple[ManifestResult | BlobResult, ...]:
        """The manifests, referrers and blobs that did not end ok, in pull order."""
        bad: tuple[ManifestResult | BlobResult, ...] = tuple(
            m for m in (*self.manifests, *self.referrers) if m.outcome is not Outcome.OK
        )
        return bad + tuple(b for b in self.blobs if b.outcome is not Outcome.OK)

    def to_dict(self) -> dict[str, Any]:
        top = self.manifests[0] if self.manifests else None
        return {
            "environment": self.environment,
            "repository": self.repository,
            "tag": self.tag,
            "ok": self.ok,
            "outcome": str(self.outcome),
            "pinned_digest": self.pinned_digest,
            "matches_pin": self.matches_pin,
            "manifest": top.to_dict() if top else None,
            "platform_manifests": [m.to_dict() for m in self.manifests[1:]],
            "blobs": [b.to_dict() for b in self.blobs],
            "verified_blobs": self.verified_blobs,
            "skipped": [s.to_dict() for s in self.skipped],
            "referrers": [r.to_dict() for r in self.referrers],
            "referrers_checked": self.referrers_checked,
            "requirements": dict(self.requirements),
            "published": [p.to_dict() for p in self.published],
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "duration_seconds": round(self.duration_seconds, 6),
            "evidence": self.evidence.to_dict() if self.evidence else None,
        }


class ControlStep(StrEnum):
    """The steps of a control round, in order."""

    PUSH = "push"
    PULL = "pull"
    DELETE = "delete"


class WriteOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"  # the registry has deletes turned off (405 UNSUPPORTED)


class WriteOperation(StrEnum):
    """The requests with which the control probe changes a registry; each one is counted."""

    BLOB_UPLOAD = "blob_upload"
    MANIFEST_PUT = "manifest_put"
    MANIFEST_DELETE = "manifest_delete"
    BLOB_DELETE = "blob_delete"


@dataclass(frozen=True, slots=True)
class ControlResult:
    """One round of an environment's control probe: a fresh image pushed, pulled back, deleted."""

    environment: str
    repository: str
    tag: str
    digest: str | None  # of the pushed manifest, once built
    outcome: Outcome  # ok when the fresh image was pushed and pulled back verified
    failed_step: ControlStep | None
    durations: tuple[tuple[ControlStep, float], ...]
    writes: tuple[tuple[WriteOperation, WriteOutcome], ...]
    deleted: bool | None  # None: the registry does not allow deletes
    started_at: datetime
    evidence: Evidence | None = None
    pull: ImageResult | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "ok": self.ok,
            "outcome": str(self.outcome),
            "failed_step": str(self.failed_step) if self.failed_step else None,
            "durations": {str(step): round(seconds, 6) for step, seconds in self.durations},
            "writes": [{"operation": str(o), "outcome": str(w)} for o, w in self.writes],
            "deleted": self.deleted,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "evidence": self.evidence.to_dict() if self.evidence else None,
            "pull": self.pull.to_dict() if self.pull else None,
        }
