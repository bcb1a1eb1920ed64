"""Finding an image's referrers (signatures, attestations, SBOMs) as the tools that write them do:
the OCI 1.1 referrers API, its tag-schema fallback, and cosign's tags; and whether the catalog's
requirements are met."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from canary.pull_options import KINDS, meets
from canary.registry.client import RegistryClient
from canary.registry.errors import RegistryError, failure
from canary.registry.media import Index, ManifestError, parse_manifest
from canary.results import Fetch, Hop, Outcome, ReferrerSource


@dataclass(frozen=True, slots=True)
class Candidate:
    """A manifest that may refer to the image: listed by digest, or a cosign tag to try."""

    reference: str  # the digest to fetch, or cosign's tag
    artifact_type: str | None  # as the listing gives it
    found_via: ReferrerSource
    cosign_suffix: str | None = None

    @property
    def listed(self) -> bool:
        """Whether a listing named it (a cosign tag is only a name to try, and may not exist)."""
        return self.cosign_suffix is None


@dataclass(frozen=True, slots=True)
class Listing:
    """The referrers a registry lists for a digest, or why it could not say."""

    candidates: tuple[Candidate, ...]
    failure: Fetch | None = None


# cosign's tag suffixes, each tried: a catalog that requires nothing still wants whatever exists
# verified, and a registry answers a missing tag with a cheap 404.
COSIGN_SUFFIXES = tuple(kind.cosign_suffix for kind in KINDS.values())


def tag_schema(digest: str) -> str:
    """The fallback tag of the distribution spec: `<alg>-<hex>`, each part truncated as it says."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


def cosign_tags(digest: str) -> list[Candidate]:
    """cosign's tags for what it attached to `digest`: `sha256-<hex>.sig`, `.att`, `.sbom`."""
    base = digest.replace(":", "-")
    return [
        Candidate(f"{base}.{suffix}", None, ReferrerSource.COSIGN_TAG, cosign_suffix=suffix)
        for suffix in COSIGN_SUFFIXES
    ]


def _entries(body: bytes, source: ReferrerSource) -> list[Candidate]:
    """The descriptors of a referrers index; a body that is not one is a ManifestError."""
    parsed = parse_manifest(body, None)
    if not isinstance(parsed, Index):
        raise ManifestError("the referrers list is not an image index")
    return [Candidate(entry.digest, entry.artifact_type, source) for entry in parsed.manifests]


async def list_referrers(client: RegistryClient, repository: str, digest: str) -> Listing:
    """What the referrers API lists for `digest`; where the registry has no such API (404), what
    the tag-schema index lists. Neither is an error when there are no referrers."""
    fetch, pages = await client.get_referrers(repository, digest)
    if fetch.outcome is Outcome.OK:
        try:
            found = [c for page in pages for c in _entries(page, ReferrerSource.API)]
        except ManifestError as exc:
            return Listing((), _bad(fetch, str(exc), client.base_url, repository, digest))
        return Listing(tuple(found))
    if fetch.status != 404:
        return Listing((), fetch)
    try:
        index = await client.get_manifest(repository, tag_schema(digest))
    except RegistryError as exc:
        if exc.fetch.outcome is Outcome.MANIFEST_UNKNOWN:
            return Listing(())
        return Listing((), exc.fetch)
    try:
        return Listing(tuple(_entries(index.body, ReferrerSource.TAG_SCHEMA)))
    except ManifestError as exc:
        return Listing((), _bad(index.fetch, str(exc), client.base_url, repository, digest))


def _bad(fetch: Fetch, detail: str, base_url: str, repository: str, digest: str) -> Fetch:
    return failure(
        Outcome.INVALID_RESPONSE,
        detail,
        hop=Hop.REGISTRY,
        url=f"{base_url}/v2/{repository}/referrers/{digest}",
        status=fetch.status,
        request_id_=fetch.request_id,
    )


def unmet(requirements: Sequence[str], found: Iterable[tuple[str | None, str | None]]) -> list[str]:
    """The requirements that no found referrer meets; `found` is (artifact type, cosign suffix)."""
    seen = list(found)
    return [r for r in requirements if not any(meets(r, t, s) for t, s in seen)]
