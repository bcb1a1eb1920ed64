"""An image's referrers after its pull: each one listed or tagged is pulled and verified like an
image, and the catalog's requirements (a signature, an SBOM) are checked, a miss confirmed."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from canary.pull.state import PullState
from canary.pull.walk import failed_result, read_image, read_manifest
from canary.registry.client import RegistryClient
from canary.registry.errors import safe_url
from canary.registry.media import ImageManifest
from canary.registry.referrers import Candidate, cosign_tags, list_referrers, unmet
from canary.results import Evidence, ManifestResult, Outcome, ReferrerSource


async def check_referrers(client: RegistryClient, pull: PullState, subject: str) -> None:
    """Find the image's referrers, pull and verify each, and check the catalog's requirements.
    A missing requirement is confirmed by listing again after the recheck delay; while the
    registry cannot list referrers, a requirement cosign's tags do not meet is unknown."""
    options = pull.target.referrers
    assert options is not None  # the caller checked
    pull.reading_referrers = True
    kinds: dict[str, tuple[str | None, str | None]] = {}
    handled: set[str] = set()
    listed = False
    for attempt in (1, 2):
        listed = await _find_referrers(client, pull, subject, kinds, handled, attempt == 1)
        missing = unmet(options.require, kinds.values())
        if not missing or not listed or attempt == 2:
            break
        await asyncio.sleep(pull.target.recheck_delay)
    # Found concurrently: put in an order that does not depend on which answer came first.
    pull.referrers.sort(key=_order)
    pull.requirements = tuple(
        (r, True if r not in missing else (False if listed else None)) for r in options.require
    )
    pull.referrers_checked = True
    if not listed:
        return
    url = safe_url(f"{client.base_url}/v2/{pull.target.image.repository}/referrers/{subject}")
    for requirement in missing:
        pull.referrers.append(
            ManifestResult(
                digest=None,
                outcome=Outcome.REFERRER_MISSING,
                status=None,
                first_outcome=Outcome.REFERRER_MISSING,
                evidence=Evidence(
                    detail=f"no referrer of the image is a {requirement} ({len(kinds)} found, "
                    f"listed again after {pull.target.recheck_delay:g}s)",
                    url=url,
                ),
                artifact_type=requirement,
            )
        )


_SOURCES = {source: rank for rank, source in enumerate(ReferrerSource)}


def _order(result: ManifestResult) -> tuple[int, str, str]:
    source = _SOURCES[result.found_via] if result.found_via else len(_SOURCES)
    return source, result.artifact_type or "", result.digest or ""


async def _find_referrers(
    client: RegistryClient,
    pull: PullState,
    subject: str,
    kinds: dict[str, tuple[str | None, str | None]],
    handled: set[str],
    first: bool,
) -> bool:
    """List the referrers and try cosign's tags, pulling each new one; `kinds` gains (artifact
    type, cosign suffix) per referrer read. Returns whether the listing worked."""
    listing = await list_referrers(client, pull.target.image.repository, subject)
    if listing.failure is not None and first:
        failed = failed_result(listing.failure, listing.failure, None, None)
        pull.referrers.append(replace(failed, found_via=ReferrerSource.API))
    candidates = [*listing.candidates, *cosign_tags(subject)]
    await asyncio.gather(
        *(
            _referrer(client, pull, candidate, kinds, handled)
            for candidate in candidates
            if candidate.reference not in handled
        )
    )
    return listing.failure is None


async def _referrer(
    client: RegistryClient,
    pull: PullState,
    candidate: Candidate,
    kinds: dict[str, tuple[str | None, str | None]],
    handled: set[str],
) -> None:
    expected = candidate.reference if candidate.listed else None
    read = await read_manifest(
        client, pull, candidate.reference, expected, platform=None, referrer=candidate
    )
    if read is None:
        return  # a cosign tag that does not exist: tried again on the recheck
    handled.add(candidate.reference)
    digest, parsed = read.result.digest, read.parsed
    if parsed is None or digest is None:
        return
    kinds[candidate.reference] = (read.result.artifact_type, candidate.cosign_suffix)
    if isinstance(parsed, ImageManifest) and digest not in pull.visited:
        pull.visited.add(digest)
        await read_image(client, pull, parsed, None, (), referrer=digest)
