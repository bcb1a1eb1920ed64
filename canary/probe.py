"""Pull one catalog image from one environment as a runtime would, and say what happened."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from canary.budget import BlobBudget
from canary.config import BlobCheck, Config, PublishedSource, Target
from canary.published.gitlab import GitLabClient
from canary.published.judge import Context, Observation, judge
from canary.published.pulled import pulled_date
from canary.published.seen import FirstSeen
from canary.published.sources import external_dates
from canary.pull.referrers import check_referrers
from canary.pull.state import (
    PullState,
    overall,
    read_every_manifest,
    stage_of,
    time_out,
    verified_nothing,
    why_nothing,
)
from canary.pull.walk import walk
from canary.registry.client import RegistryClient
from canary.registry.selection import missing_platforms
from canary.results import Evidence, ImageResult, ManifestResult, Outcome, PublishedResult


@dataclass
class Pulled:
    """A finished pull whose published dates may still be arriving: whoever bounds pulls (a
    slot) lets go after the pull, not after a slow date source."""

    pull: PullState
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
            outcome=overall(pull, self.stopped_by),
            manifests=tuple(pull.manifests),
            blobs=tuple(pull.blobs.values()),
            published=_published(pull, observations, self.seen, self.started_at),
            started_at=self.started_at,
            duration_seconds=self.duration_seconds,
            evidence=self.evidence,
            pinned_digest=target.image.digest,
            skipped=tuple(pull.skipped.values()),
            referrers=tuple(pull.referrers),
            requirements=pull.requirements,
            referrers_checked=pull.referrers_checked,
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
    pull = PullState(target, budget=budget if target.blob_check is BlobCheck.BUDGET else None)
    evidence, stopped_by = None, None
    dates: asyncio.Future[list[Observation]]
    if target.published_sources in ((PublishedSource.CONFIG,), ()):
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
            f"(during {stage_of(pull)})",
            url=client.base_url,
        )
        time_out(pull, evidence)
        stopped_by = Outcome.TIMEOUT
    except Exception as exc:  # a bug must not take down the other probes
        # Transport and protocol failures are outcomes already; this is the last boundary.
        # Only the type is kept: an exception's text could carry anything, secrets included.
        evidence = Evidence(detail=f"unexpected error: {type(exc).__name__}", url=client.base_url)
        stopped_by = Outcome.INVALID_RESPONSE
    except asyncio.CancelledError:
        dates.cancel()
        raise
    if stopped_by is None and verified_nothing(pull):
        stopped_by = Outcome.NOTHING_VERIFIED
        evidence = Evidence(detail=why_nothing(pull), url=client.base_url)
    if pull.budget is not None and stopped_by is None and read_every_manifest(pull):
        # Only a pull that saw every platform knows the image's layers; a partial one would
        # drop the others' verification history.
        pull.budget.settle(target.key, pull.layers)
    duration = time.monotonic() - start
    return Pulled(pull, dates, seen, started_at, duration, stopped_by, evidence)


async def _pull(client: RegistryClient, pull: PullState) -> None:
    image = pull.target.image
    top = await walk(client, pull, image.tag, image.digest, None, (), 0)
    if pull.top_is_index and read_every_manifest(pull):
        for wanted in missing_platforms(pull.target.platforms, pull.reached):
            pull.manifests.append(
                ManifestResult(
                    digest=None,
                    outcome=Outcome.MANIFEST_UNKNOWN,
                    status=None,
                    platform=wanted,
                    evidence=Evidence(detail=f"the index has no manifest for {wanted}"),
                )
            )
    if pull.target.referrers is not None and top is not None:
        await check_referrers(client, pull, top)


def _published(
    pull: PullState, external: list[Observation], seen: FirstSeen | None, started_at: datetime
) -> tuple[PublishedResult, ...]:
    """Every configured source's date, judged against the pin, the config blob and the first
    sighting of the tag's digest."""
    target = pull.target
    if not target.published_sources:
        return ()
    config = pulled_date(pull.leaves, pull.index_created)
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
    return tuple(judge(observed[s], context) for s in target.published_sources)


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
