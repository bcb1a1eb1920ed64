"""Pull one catalog image from one environment as a runtime would, and say what happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from canary.budget import BlobBudget
from canary.config import BlobCheck, Config, PublishedSource, Target
from canary.published.gitlab import GitLabClient
from canary.published.judge import Context, Observation, judge
from canary.published.seen import FirstSeen
from canary.published.sources import external_dates
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
from canary.results import (
    BlobKind,
    BlobResult,
    Evidence,
    Fetch,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    PublishedResult,
)

MAX_CONFIG_BYTES = 8 * 1024 * 1024
# Attestation manifests in an index carry this placeholder platform; runtimes skip them.
_NOT_A_PLATFORM = "unknown/unknown"


@dataclass
class _Pull:
    """What one pull has seen so far; kept outside the task so a timeout loses nothing."""

    target: Target
    manifests: list[ManifestResult] = field(default_factory=list)
    blobs: dict[str, BlobResult] = field(default_factory=dict)
    in_flight: dict[str, tuple[BlobKind, str | None, float, Where]] = field(default_factory=dict)
    # Config blobs by the platform's position in the index, so the date never depends on timing.
    # Each is the parsed config, or why it could not be read.
    configs: dict[int, ImageConfig | str] = field(default_factory=dict)
    stage: str = "manifest"
    budget: BlobBudget | None = None
    layers: set[str] = field(default_factory=set)  # every layer the manifests name


async def _confirmed(fetch: Callable[[], Awaitable[Fetch]], delay: float) -> tuple[Fetch, Fetch]:
    """Fetch, and fetch again after `delay` when the first answer says data is lost."""
    first = await fetch()
    if not first.outcome.is_data_loss:
        return first, first
    await asyncio.sleep(delay)
    return first, await fetch()


@dataclass
class Pulled:
    """A finished pull whose published dates may still be arriving: whoever bounds pulls (a
    slot) lets go after the pull, not after a slow date source."""

    pull: _Pull
    dates: asyncio.Future[list[Observation]]
    seen: FirstSeen | None
    started_at: datetime
    duration_seconds: float
    stopped_by: Outcome | None
    evidence: Evidence | None

    async def result(self) -> ImageResult:
        observations = await self.dates  # bounded by each source's timeout; never raises
        pull, target = self.pull, self.pull.target
        return ImageResult(
            environment=target.environment.name,
            repository=target.image.repository,
            tag=target.image.tag,
            outcome=_overall(pull, self.stopped_by),
            manifests=tuple(pull.manifests),
            blobs=tuple(pull.blobs.values()),
            published=_published(pull, observations, self.seen, self.started_at),
            started_at=self.started_at,
            duration_seconds=self.duration_seconds,
            evidence=self.evidence,
            pinned_digest=target.image.digest,
        )


async def probe_image(
    client: RegistryClient,
    target: Target,
    gitlab: GitLabClient | None = None,
    seen: FirstSeen | None = None,
) -> ImageResult:
    """Pull `target` and read its published dates; failures are outcomes, never raised."""
    pulled = await pull_image(client, target, gitlab, seen)
    return await pulled.result()


async def pull_image(
    client: RegistryClient,
    target: Target,
    gitlab: GitLabClient | None = None,
    seen: FirstSeen | None = None,
    budget: BlobBudget | None = None,
) -> Pulled:
    """Pull `target` through `client` within its timeout, while its published dates are read
    beside it, each source within its own timeout. Under blob_check: budget, `budget` says
    which layers to download in full; the others get a HEAD."""
    started_at = datetime.now(UTC)
    start = time.monotonic()
    # Only budgeted images feed the budget: another image's layers are not its to rotate.
    pull = _Pull(target, budget=budget if target.blob_check is BlobCheck.BUDGET else None)
    evidence, stopped_by = None, None
    dates: asyncio.Future[list[Observation]]
    if target.environment.published_sources == (PublishedSource.CONFIG,):
        # The common case, on the hot path: nothing to read beside the pull, so no task.
        dates = asyncio.get_running_loop().create_future()
        dates.set_result([])
    else:
        dates = asyncio.ensure_future(external_dates(target, client, gitlab))
    try:
        async with asyncio.timeout(target.timeout):
            await _pull(client, pull)
    except TimeoutError:
        evidence = Evidence(
            detail=f"the pull took longer than its timeout of {target.timeout:g}s "
            f"(during {pull.stage})",
            url=client.base_url,
        )
        _time_out(pull, evidence)
        stopped_by = Outcome.TIMEOUT
    except Exception as exc:  # a bug must not take down the other probes
        # Transport and protocol failures are outcomes already; this is the last boundary.
        # Only the type is kept: an exception's text could carry anything, secrets included.
        evidence = Evidence(detail=f"unexpected error: {type(exc).__name__}", url=client.base_url)
        stopped_by = Outcome.INVALID_RESPONSE
    except asyncio.CancelledError:
        dates.cancel()
        raise
    if pull.budget is not None and stopped_by is None and _read_every_manifest(pull):
        # Only a pull that saw every platform knows the image's layers; a partial one would
        # drop the others' verification history.
        pull.budget.settle(target.key, pull.layers)
    duration = time.monotonic() - start
    return Pulled(pull, dates, seen, started_at, duration, stopped_by, evidence)


def _read_every_manifest(pull: _Pull) -> bool:
    return bool(pull.manifests) and all(m.outcome is Outcome.OK for m in pull.manifests)


def _time_out(pull: _Pull, evidence: Evidence) -> None:
    now = time.monotonic()
    if not pull.manifests or pull.stage == "platform manifests":
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


def _overall(pull: _Pull, stopped_by: Outcome | None) -> Outcome:
    failures: list[Outcome] = [m.outcome for m in pull.manifests if m.outcome is not Outcome.OK]
    failures += [b.outcome for b in pull.blobs.values() if b.outcome is not Outcome.OK]
    if stopped_by is not None and stopped_by not in failures:
        failures.append(stopped_by)
    if not failures:
        return Outcome.OK
    # Data loss is what pages, so it names the image's outcome even when it came second.
    return next((o for o in failures if o.is_data_loss), failures[0])


async def _pull(client: RegistryClient, pull: _Pull) -> None:
    image, delay = pull.target.image, pull.target.recheck_delay
    top = await _manifest(client, pull, image.tag, image.digest, platform=None, delay=delay)
    if top is None:
        return
    if isinstance(top, ImageManifest):
        pull.stage = "blobs"
        await _image(client, pull, top, platform=None, position=0)
        return
    selected, missing = select_platforms(top, pull.target.platforms)
    for wanted in missing:
        pull.manifests.append(
            ManifestResult(
                digest=None,
                outcome=Outcome.MANIFEST_UNKNOWN,
                status=None,
                platform=wanted,
                evidence=Evidence(detail=f"the index has no manifest for {wanted}"),
            )
        )
    pull.stage = "platform manifests"
    children = await asyncio.gather(
        *(
            _manifest(
                client, pull, entry.digest, entry.digest, platform=entry.platform, delay=delay
            )
            for entry in selected
        )
    )
    pull.stage = "blobs"
    await asyncio.gather(
        *(
            _image(client, pull, child, platform=entry.platform, position=position)
            for position, (entry, child) in enumerate(zip(selected, children, strict=True))
            if isinstance(child, ImageManifest)
        )
    )


def select_platforms(index: Index, wanted: object) -> tuple[list[Descriptor], list[str]]:
    """The index entries a runtime would pull for `wanted` (attestations skipped), and the
    wanted platforms the index lacks."""
    entries = [e for e in index.manifests if e.platform and e.platform != _NOT_A_PLATFORM]
    if wanted == "all":
        return entries, []
    assert isinstance(wanted, tuple)
    chosen = [e for e in entries if e.platform in wanted]
    present = {e.platform for e in chosen}
    return chosen, [p for p in wanted if p not in present]


async def _manifest(
    client: RegistryClient,
    pull: _Pull,
    reference: str,
    expected: str | None,
    *,
    platform: str | None,
    delay: float,
) -> ImageManifest | Index | None:
    repository = pull.target.image.repository
    bodies: dict[str, Manifest] = {}

    async def once() -> Fetch:
        try:
            manifest = await client.get_manifest(repository, reference, expected)
        except RegistryError as exc:
            return exc.fetch
        bodies["last"] = manifest
        return manifest.fetch

    first, final = await _confirmed(once, delay)
    if final.outcome is not Outcome.OK:
        pull.manifests.append(
            ManifestResult(
                digest=expected,
                outcome=final.outcome,
                status=final.status,
                platform=platform,
                first_outcome=first.outcome,
                evidence=final.evidence,
                hop=final.hop,
                request_id=final.request_id,
                served_digest=final.digest,
            )
        )
        return None
    manifest = bodies["last"]
    try:
        parsed = parse_manifest(manifest.body, manifest.content_type)
        if platform is not None and not isinstance(parsed, ImageManifest):
            raise ManifestError("a platform entry of the index is not an image manifest")
    except ManifestError as exc:
        bad = failure(
            Outcome.INVALID_RESPONSE,
            str(exc),
            hop=final.hop,
            url=f"{client.base_url}/v2/{repository}/manifests/{reference}",
            status=final.status,
            request_id_=final.request_id,
        )
        pull.manifests.append(
            ManifestResult(
                digest=manifest.digest,
                outcome=bad.outcome,
                status=final.status,
                platform=platform,
                first_outcome=first.outcome,
                evidence=bad.evidence,
                hop=final.hop,
                request_id=final.request_id,
                served_digest=manifest.digest,
            )
        )
        return None
    pull.manifests.append(
        ManifestResult(
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
    )
    return parsed


async def _image(
    client: RegistryClient,
    pull: _Pull,
    manifest: ImageManifest,
    platform: str | None,
    position: int,
) -> None:
    config_result, body = await _blob(
        client, pull, manifest.config, BlobKind.CONFIG, platform, BlobCheck.GET
    )
    config: ImageConfig | str = f"the config blob could not be read ({config_result.outcome})"
    if body is not None:
        try:
            config = parse_image_config(body)
        except ManifestError as exc:
            config = str(exc)
    pull.configs[position] = config
    if platform is None and isinstance(config, ImageConfig) and config.platform:
        platform = config.platform
        # Seen only now, from the config: the config's own result gets it too.
        pull.blobs[manifest.config.digest] = replace(config_result, platform=platform)
    pull.layers.update(layer.digest for layer in manifest.layers)
    await asyncio.gather(
        *(
            _blob(client, pull, layer, BlobKind.LAYER, platform, _mode(pull, layer))
            for layer in manifest.layers
            if layer.digest not in pull.blobs and layer.digest not in pull.in_flight
        )
    )


def _mode(pull: _Pull, layer: Descriptor) -> BlobCheck:
    """How to fetch a layer: as configured, or under a budget a GET only when it grants one."""
    mode = pull.target.blob_check
    if mode is not BlobCheck.BUDGET:
        return mode
    budget = pull.budget
    if budget is not None and budget.take(layer.digest, layer.size, time.time()):
        return BlobCheck.GET
    return BlobCheck.HEAD


async def _blob(
    client: RegistryClient,
    pull: _Pull,
    blob: Descriptor,
    kind: BlobKind,
    platform: str | None,
    mode: BlobCheck,
) -> tuple[BlobResult, bytes | None]:
    repository = pull.target.image.repository
    began = time.monotonic()
    start_url = f"{client.base_url}/v2/{repository}/blobs/{blob.digest}"
    where = Where(Hop.REGISTRY, start_url)
    pull.in_flight[blob.digest] = (kind, platform, began, where)
    bodies: list[bytes | None] = []
    # A budgeted pull's GET of a layer was granted by the budget, which must hear what it cost.
    granted = pull.budget if kind is BlobKind.LAYER and mode is BlobCheck.GET else None

    async def once() -> Fetch:
        # A recheck starts at the registry again.
        where.hop, where.url = (
            Hop.REGISTRY,
            f"{client.base_url}/v2/{repository}/blobs/{blob.digest}",
        )
        keep = MAX_CONFIG_BYTES if kind is BlobKind.CONFIG else 0
        fetch, body = await client.fetch_blob(repository, blob, mode, keep_up_to=keep, where=where)
        bodies.append(body)
        return fetch

    try:
        first, final = await _confirmed(once, pull.target.recheck_delay)
    except BaseException:
        if granted is not None:
            # Cut off midway: how much arrived is unknown, so the budget assumes all of it.
            granted.done(blob.digest, False, blob.size, time.time())
        raise
    if granted is not None:
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
    )
    pull.in_flight.pop(blob.digest, None)
    pull.blobs[blob.digest] = result
    return result, bodies[-1]


def _config_date(pull: _Pull) -> Observation:
    """The date of the first platform, in index order, whose config gives one."""
    if not pull.configs:
        return Observation(PublishedSource.CONFIG, None, "the pull did not reach the config blob")
    problems = []
    for position in sorted(pull.configs):
        config = pull.configs[position]
        if isinstance(config, str):
            problems.append(config)
        elif config.created is None:
            problems.append(config.created_problem or "no date")
        else:
            return Observation(PublishedSource.CONFIG, config.created)
    return Observation(PublishedSource.CONFIG, None, problems[0])


def _published(
    pull: _Pull, external: list[Observation], seen: FirstSeen | None, started_at: datetime
) -> tuple[PublishedResult, ...]:
    """Every configured source's date, judged against the pin, the config blob and the first
    sighting of the tag's digest."""
    target = pull.target
    config = _config_date(pull)
    top = pull.manifests[0] if pull.manifests else None
    first_seen = None
    if seen is not None and top is not None and top.outcome is Outcome.OK and top.digest:
        first_seen = seen.observe(target.key, top.digest, started_at)
    context = Context(
        now=datetime.now(UTC),
        tolerance=timedelta(seconds=target.published_tolerance),
        pin=target.image.published,
        config_created=config.timestamp,
        first_seen=first_seen,
        min_age=timedelta(seconds=target.min_age) if target.min_age is not None else None,
    )
    observed = {o.source: o for o in [config, *external]}
    return tuple(judge(observed[s], context) for s in target.environment.published_sources)


async def probe_catalog(
    config: Config,
    environments: Iterable[str] = (),
    on_result: Callable[[ImageResult], None] | None = None,
    only: Iterable[tuple[str, str, str]] | None = None,
) -> list[ImageResult]:
    """Probe every selected (environment, image) once, or only the targets whose `Target.key`
    is in `only`; results come back in catalog order."""
    targets = list(config.targets(tuple(environments)))
    if only is not None:
        keys = set(only)
        targets = [target for target in targets if target.key in keys]
    clients = {
        env.name: RegistryClient(env)
        for env in config.environments
        if any(t.environment.name == env.name for t in targets)
    }
    gitlabs = {
        name: GitLabClient(client.environment.gitlab)
        for name, client in clients.items()
        if client.environment.gitlab is not None
    }
    slots = {
        name: asyncio.Semaphore(client.environment.concurrency) for name, client in clients.items()
    }
    # A one-shot run sees every tag for the first time: only dates after the run start fail it.
    seen = FirstSeen()
    # Under blob_check: budget, a one-shot run downloads in full what a fresh budget allows.
    budgets = {}
    for name, client in clients.items():
        if settings := config.budget_settings(client.environment):
            budget, cycle = settings
            budgets[name] = BlobBudget(budget, hold=2 * cycle, now=time.time())

    async def one(target: Target) -> ImageResult:
        name = target.environment.name
        # Images wait for a slot before their timeout starts, so a queue is not a timeout.
        async with slots[name]:
            pulled = await pull_image(
                clients[name], target, gitlabs.get(name), seen, budgets.get(name)
            )
        result = await pulled.result()
        if on_result is not None:
            on_result(result)
        return result

    try:
        return list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        closing = [c.close() for c in clients.values()] + [g.close() for g in gitlabs.values()]
        await asyncio.gather(*closing)
