"""Walking an image as containerd does: manifests and nested indexes, then each image
manifest's config and layers, every byte checked against its digest; foreign layers as
foreign_layers says."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from canary.config import BlobCheck
from canary.published.pulled import LeafDates, Position
from canary.pull.state import InFlight, PullState, as_referrer, confirmed
from canary.pull_options import ForeignLayers
from canary.registry.client import Manifest, RegistryClient, Where
from canary.registry.errors import RegistryError, failure, safe_url
from canary.registry.media import (
    Descriptor,
    ImageConfig,
    ImageManifest,
    Index,
    ManifestError,
    parse_image_config,
    parse_manifest,
)
from canary.registry.referrers import Candidate
from canary.registry.selection import MAX_INDEX_DEPTH, select
from canary.results import (
    BlobKind,
    BlobResult,
    Evidence,
    Fetch,
    Hop,
    ManifestResult,
    Outcome,
    Skipped,
    SkipReason,
)

MAX_CONFIG_BYTES = 8 * 1024 * 1024


async def walk(
    client: RegistryClient,
    pull: PullState,
    reference: str,
    expected: str | None,
    platform: str | None,
    position: Position,
    depth: int,
) -> str | None:
    """Pull a manifest and everything under it, as containerd walks an image: an index's
    entries (nested indexes too, to a bounded depth), then each image manifest's blobs.
    Returns the digest of the manifest pulled, or None when it could not be read."""
    read = await read_manifest(client, pull, reference, expected, platform=platform)
    if read is None or read.parsed is None or read.result.digest is None:
        return None
    digest, parsed = read.result.digest, read.parsed
    pull.visited.add(digest)
    if isinstance(parsed, ImageManifest):
        await read_image(client, pull, parsed, platform, position)
        return digest
    if depth == 0:
        pull.top_is_index, pull.index_created = True, parsed.created
    chosen = select(parsed, pull.target.platforms)
    for entry in chosen.attestations:
        pull.skip(
            Skipped(
                entry.digest,
                "manifest",
                entry.platform,
                SkipReason.ATTESTATION,
                "an attestation manifest (build provenance or SBOM); runtimes do not pull it",
            )
        )
    children = []
    for entry in chosen.follow:
        if entry.digest in pull.visited:
            continue  # listed twice, or a cycle: one pull of it is enough
        pull.visited.add(entry.digest)
        if depth + 1 > MAX_INDEX_DEPTH:
            pull.manifests.append(_too_deep(client, pull, entry))
            continue
        children.append(entry)
    await asyncio.gather(
        *(
            walk(client, pull, e.digest, e.digest, e.platform, (*position, i), depth + 1)
            for i, e in enumerate(children)
        )
    )
    return digest


def _too_deep(client: RegistryClient, pull: PullState, entry: Descriptor) -> ManifestResult:
    url = f"{client.base_url}/v2/{pull.target.image.repository}/manifests/{entry.digest}"
    return ManifestResult(
        digest=entry.digest,
        outcome=Outcome.INVALID_RESPONSE,
        status=None,
        platform=entry.platform,
        evidence=Evidence(
            detail=f"indexes nested more than {MAX_INDEX_DEPTH} deep; not followed",
            url=safe_url(url),
        ),
    )


@dataclass(frozen=True, slots=True)
class Read:
    """A manifest request's recorded result, and the manifest when it could be read."""

    result: ManifestResult
    parsed: ImageManifest | Index | None


def failed_result(
    fetch: Fetch, first: Fetch, digest: str | None, platform: str | None
) -> ManifestResult:
    """The result of a manifest request that ended in `fetch` (its first answer `first`)."""
    return ManifestResult(
        digest=digest,
        outcome=fetch.outcome,
        status=fetch.status,
        platform=platform,
        first_outcome=first.outcome,
        evidence=fetch.evidence,
        hop=fetch.hop,
        request_id=fetch.request_id,
        served_digest=fetch.digest,
    )


async def read_manifest(
    client: RegistryClient,
    pull: PullState,
    reference: str,
    expected: str | None,
    *,
    platform: str | None,
    referrer: Candidate | None = None,
) -> Read | None:
    """Fetch and parse one manifest, confirming a loss by a second fetch, and record the result
    (among the referrers for a referrer). A cosign tag that does not exist is no result (None):
    it is only a name to try."""
    repository = pull.target.image.repository
    bodies: dict[str, Manifest] = {}
    optional = referrer is not None and not referrer.listed

    async def once() -> Fetch:
        try:
            manifest = await client.get_manifest(repository, reference, expected)
        except RegistryError as exc:
            return exc.fetch
        bodies["last"] = manifest
        return manifest.fetch

    # Left in place when the pull's timeout cancels the request, so the timeout can name it.
    request = InFlight(expected, platform, referrer)
    pull.manifests_in_flight.add(request)
    if optional:
        first = final = await once()
    else:
        first, final = await confirmed(once, pull.target.recheck_delay)
    pull.manifests_in_flight.remove(request)
    if optional and final.outcome is Outcome.MANIFEST_UNKNOWN:
        return None
    parsed: ImageManifest | Index | None = None
    if final.outcome is not Outcome.OK:
        result = failed_result(final, first, expected, platform)
    else:
        manifest = bodies["last"]
        try:
            parsed = parse_manifest(manifest.body, manifest.content_type)
        except ManifestError as exc:
            bad = failure(
                Outcome.INVALID_RESPONSE,
                str(exc),
                hop=final.hop,
                url=f"{client.base_url}/v2/{repository}/manifests/{reference}",
                status=final.status,
                request_id_=final.request_id,
            )
            result = failed_result(
                replace(bad, digest=manifest.digest), first, manifest.digest, platform
            )
        else:
            result = ManifestResult(
                digest=manifest.digest,
                outcome=Outcome.OK,
                status=final.status,
                media_type=parsed.media_type,
                platform=platform,
                first_outcome=first.outcome,
                hop=final.hop,
                request_id=final.request_id,
                served_digest=manifest.digest,
            )
    if referrer is None:
        pull.manifests.append(result)
    else:
        result = as_referrer(result, referrer, parsed)
        pull.referrers.append(result)
    return Read(result, parsed)


async def read_image(
    client: RegistryClient,
    pull: PullState,
    manifest: ImageManifest,
    platform: str | None,
    position: Position,
    referrer: str | None = None,
) -> None:
    """Fetch an image or artifact manifest's config blob and layers, as blob_check says; a
    non-distributable layer as foreign_layers says."""
    config: ImageConfig | str
    if manifest.config is None:  # schema 1 embeds its config in its history
        config = manifest.embedded_config or "the manifest has no history"
    else:
        config_result, body = await read_blob(
            client, pull, manifest.config, BlobKind.CONFIG, platform, BlobCheck.GET, referrer
        )
        config = f"the config blob could not be read ({config_result.outcome})"
        if body is not None:
            try:
                config = parse_image_config(body)
            except ManifestError as exc:
                config = str(exc)
        if platform is None and isinstance(config, ImageConfig) and config.platform:
            # Seen only now, from the config: the config's own result gets it too.
            pull.blobs[manifest.config.digest] = replace(config_result, platform=config.platform)
    if platform is None and isinstance(config, ImageConfig):
        platform = config.platform
    if referrer is None:
        pull.leaves[position] = LeafDates(config, manifest.created)
        pull.reached.append(platform)
    for layer in manifest.empty_layers:
        pull.skip(
            Skipped(
                layer.digest,
                "layer",
                platform,
                SkipReason.EMPTY_LAYER,
                "a schema 1 layer its history marks empty (throwaway); runtimes never download it",
            )
        )
    fetches = []
    for layer in manifest.layers:
        if layer.digest in pull.blobs or layer.digest in pull.in_flight:
            continue
        foreign = layer.foreign
        if foreign and pull.target.foreign_layers is ForeignLayers.SKIP:
            pull.skip(_foreign_skipped(layer, platform))
            continue
        if referrer is None and not foreign:
            pull.layers.add(layer.digest)
        mode = _mode(pull, layer) if referrer is None and not foreign else _plain(pull)
        fetches.append(read_blob(client, pull, layer, BlobKind.LAYER, platform, mode, referrer))
    await asyncio.gather(*fetches)


def _foreign_skipped(layer: Descriptor, platform: str | None) -> Skipped:
    count = len(layer.urls)
    return Skipped(
        layer.digest,
        "layer",
        platform,
        SkipReason.NON_DISTRIBUTABLE,
        f"a non-distributable layer ({layer.media_type}): the registry need not hold it, and "
        f"runtimes fetch it from the {count} URL{'s' if count != 1 else ''} its descriptor "
        "names; set foreign_layers: urls to verify it there",
    )


def _plain(pull: PullState) -> BlobCheck:
    """blob_check for blobs outside the byte budget (referrers, foreign layers): as configured,
    or a HEAD under `budget`."""
    mode = pull.target.blob_check
    return BlobCheck.HEAD if mode is BlobCheck.BUDGET else mode


def _mode(pull: PullState, layer: Descriptor) -> BlobCheck:
    """How to fetch a layer: as configured, or under a budget a GET only when it grants one.
    A layer without a size (schema 1) cannot be planned for, so the budget gives it a HEAD."""
    mode = pull.target.blob_check
    if mode is not BlobCheck.BUDGET:
        return mode
    budget = pull.budget
    if (
        budget is not None
        and layer.size is not None
        and budget.take(layer.digest, layer.size, time.time())
    ):
        return BlobCheck.GET
    return BlobCheck.HEAD


async def read_blob(
    client: RegistryClient,
    pull: PullState,
    blob: Descriptor,
    kind: BlobKind,
    platform: str | None,
    mode: BlobCheck,
    referrer: str | None = None,
) -> tuple[BlobResult, bytes | None]:
    repository = pull.target.image.repository
    began = time.monotonic()
    start_url = f"{client.base_url}/v2/{repository}/blobs/{blob.digest}"
    where = Where(Hop.REGISTRY, start_url)
    pull.in_flight[blob.digest] = (kind, platform, began, where)
    bodies: list[bytes | None] = []
    # A budgeted pull's GET of a layer was granted by the budget, which must hear what it cost.
    granted = (
        pull.budget
        if kind is BlobKind.LAYER and mode is BlobCheck.GET and referrer is None
        else None
    )

    async def once() -> Fetch:
        keep = MAX_CONFIG_BYTES if kind is BlobKind.CONFIG else 0
        if blob.foreign:
            fetch = await _fetch_foreign(client, repository, blob, mode, where)
            bodies.append(None)
            return fetch
        # A recheck starts at the registry again.
        where.hop, where.url = Hop.REGISTRY, start_url
        fetch, body = await client.fetch_blob(repository, blob, mode, keep_up_to=keep, where=where)
        bodies.append(body)
        return fetch

    try:
        first, final = await confirmed(once, pull.target.recheck_delay)
    except BaseException:
        if granted is not None and blob.size is not None:
            # Cut off midway: how much arrived is unknown, so the budget assumes all of it.
            granted.done(blob.digest, False, blob.size, time.time())
        raise
    if granted is not None and blob.size is not None:
        # A failure with a body (a digest mismatch) cost the whole blob; an error status, nothing.
        cost = blob.size if final.outcome is Outcome.OK or final.status in (200, 206) else 0
        granted.done(blob.digest, final.outcome is Outcome.OK, cost, time.time())
    result = BlobResult(
        digest=blob.digest,
        kind=kind,
        platform=platform,
        outcome=final.outcome,
        hop=final.hop,
        status=final.status,
        bytes=final.bytes,
        first_outcome=first.outcome,
        duration_seconds=time.monotonic() - began,
        request_id=final.request_id,
        evidence=final.evidence,
        referrer=referrer,
    )
    pull.in_flight.pop(blob.digest, None)
    pull.blobs[blob.digest] = result
    return result, bodies[-1]


async def _fetch_foreign(
    client: RegistryClient, repository: str, blob: Descriptor, mode: BlobCheck, where: Where
) -> Fetch:
    """A non-distributable layer as containerd fetches one: from each http(s) URL in turn while
    they answer 404, then from the registry, which may hold it after all. The registry's answer
    counts only when it has the layer: otherwise the sources' failure is the one to show."""
    failed: Fetch | None = None
    for url in blob.urls:
        if not url.startswith(("http://", "https://")):
            continue  # containerd skips other schemes too
        where.hop, where.url = Hop.FOREIGN, url
        fetch, _ = await client.fetch_blob(repository, blob, mode, where=where, url=url)
        if fetch.outcome is Outcome.OK:
            return fetch
        failed = failed or fetch
        if fetch.status != 404:
            return fetch
    where.hop, where.url = Hop.REGISTRY, f"{client.base_url}/v2/{repository}/blobs/{blob.digest}"
    fetch, _ = await client.fetch_blob(repository, blob, mode, where=where)
    return fetch if fetch.outcome is Outcome.OK or failed is None else failed
