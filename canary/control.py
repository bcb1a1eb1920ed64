"""The control probe: push a fresh image to a repository of its own, pull it back, delete it.

Catalog images are old; when they fail with data loss while a fresh image pushed a moment ago
pulls back verified, old data is unreadable while new data works (the BLOB_UNKNOWN incident).
The control writes only to its own repository, counts every write, and removes what it wrote.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from canary.config import BlobCheck, Environment, Image, PublishedSource, Target
from canary.probe import probe_image
from canary.registry.client import RegistryClient
from canary.registry.errors import RegistryError
from canary.registry.push import (
    Blob,
    PushError,
    SyntheticImage,
    Writes,
    delete_blob,
    delete_manifest,
    list_tags,
    manifest_digest,
    push_blob,
    push_manifest,
)
from canary.results import (
    ControlResult,
    ControlStep,
    Evidence,
    Fetch,
    ImageResult,
    Outcome,
    WriteOutcome,
)
from canary.seed import synthesize

CONTROL_TAG_PREFIX = "registry-canary-control-"
# The one tag used while the registry is not known to delete: overwritten, never piling up.
LATEST_TAG = f"{CONTROL_TAG_PREFIX}latest"
_ROUND_TAG = re.compile(rf"{re.escape(CONTROL_TAG_PREFIX)}(\d+)-[0-9a-f]+")
LAYERS = 1
LAYER_BYTES = 1024
RECHECK_DELAY = 0.2
# With deletes off, one round this often tries a delete again, to notice they were turned on.
DELETE_RECHECK_SECONDS = 3600.0


def round_tag(now: float) -> str:
    """A tag no other round uses, with the time it was made in it (for `remove_leftovers`)."""
    return f"{CONTROL_TAG_PREFIX}{int(now)}-{secrets.token_hex(4)}"


@dataclass
class _Round:
    """What a round has done so far; kept outside the steps so that a timeout loses nothing."""

    image: SyntheticImage
    step: ControlStep = ControlStep.PUSH
    began: float | None = None  # while a step is under way
    durations: list[tuple[ControlStep, float]] = field(default_factory=list)
    writes: Writes = field(default_factory=list)
    uploaded: list[Blob] = field(default_factory=list)
    tagged: bool = False
    pull: ImageResult | None = None
    outcome: Outcome = Outcome.OK
    failed_step: ControlStep | None = None
    evidence: Evidence | None = None
    deleted: bool | None = False

    def begin(self, step: ControlStep) -> None:
        self.step, self.began = step, time.monotonic()

    def end(self) -> None:
        if self.began is not None:
            self.durations.append((self.step, time.monotonic() - self.began))
            self.began = None

    def fail(self, evidence: Evidence | None, outcome: Outcome | None = None) -> None:
        """The current step failed; the first failure names the round's step and evidence."""
        if self.failed_step is None:
            self.failed_step, self.evidence = self.step, evidence
        if outcome is not None and self.outcome is Outcome.OK:
            self.outcome = outcome


class ControlProbe:
    """One environment's control probe; it remembers across rounds whether the registry deletes."""

    def __init__(self, environment: Environment, interval: float, timeout: float) -> None:
        if environment.control is None:
            raise ValueError(f"environment {environment.name} has no control repository")
        self.environment = environment
        self.repository = environment.control.repository
        self.interval = interval
        self.timeout = timeout
        # None until a delete has been answered: True once one worked, False on UNSUPPORTED.
        self.deletes_supported: bool | None = None
        self._delete_tried = 0.0  # time.monotonic() of the last delete attempt
        # Why the last `remove_leftovers` stopped short, for the caller to log; no secrets.
        self.leftovers_problem: str | None = None
        # The pull back judges the date of the config blob only, and never asks GitLab.
        self._pull_environment = environment.model_copy(
            update={"published_sources": (PublishedSource.CONFIG,), "gitlab": None}
        )

    async def round(self, client: RegistryClient) -> ControlResult:
        """Push a fresh image, pull it back verified and delete it, all within `timeout`;
        every failure is an outcome (only cancellation is raised)."""
        started_at = datetime.now(UTC)
        now = started_at.timestamp()
        name = round_tag(now)
        # Made under the round's own name whatever the tag, so every round has new bytes and
        # its blobs are really uploaded, never skipped as present.
        published = datetime.fromtimestamp(int(now), UTC)
        made = synthesize(
            Image(repository=self.repository, tag=name, published=published),
            layers=LAYERS,
            layer_size=LAYER_BYTES,
        )
        state = _Round(replace(made, tag=name if self.deletes_supported else LATEST_TAG))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._push(client, state)
            if state.tagged:
                await self._pull(client, state, published, deadline - loop.time())
            if (state.tagged or state.uploaded) and loop.time() < deadline:
                async with asyncio.timeout_at(deadline):
                    await self._delete(client, state)
        except TimeoutError:
            state.end()
            detail = f"the control round took longer than its timeout of {self.timeout:g}s"
            state.fail(
                Evidence(detail=f"{detail} (during {state.step})", url=client.base_url),
                Outcome.TIMEOUT,
            )
        except Exception as exc:  # a bug must not take down the daemon's other jobs
            # Only the type: an exception's text could carry anything, secrets included.
            state.end()
            evidence = Evidence(
                detail=f"unexpected error: {type(exc).__name__}", url=client.base_url
            )
            state.fail(evidence, Outcome.INVALID_RESPONSE)
        if not state.writes:
            # Nothing was written, so nothing is left behind.
            state.deleted = None if self.deletes_supported is False else True
        return ControlResult(
            environment=self.environment.name,
            repository=self.repository,
            tag=state.image.tag,
            digest=state.image.digest,
            outcome=state.outcome,
            failed_step=state.failed_step,
            durations=tuple(state.durations),
            writes=tuple(state.writes),
            deleted=state.deleted,
            started_at=started_at,
            evidence=state.evidence,
            pull=state.pull,
        )

    async def _push(self, client: RegistryClient, state: _Round) -> None:
        state.begin(ControlStep.PUSH)
        image = state.image
        try:
            for blob in image.blobs:
                if await push_blob(client, image.repository, blob, state.writes):
                    state.uploaded.append(blob)
            await push_manifest(client, image.repository, image.tag, image.top, state.writes)
            state.tagged = True
        except (RegistryError, PushError) as exc:
            state.fail(exc.fetch.evidence, exc.fetch.outcome)
        state.end()

    async def _pull(
        self, client: RegistryClient, state: _Round, published: datetime, remaining: float
    ) -> None:
        state.begin(ControlStep.PULL)
        target = Target(
            environment=self._pull_environment,
            image=Image(
                repository=self.repository,
                tag=state.image.tag,
                digest=state.image.digest,
                published=published,
            ),
            blob_check=BlobCheck.GET,
            platforms="all",
            interval=self.interval,
            # The pull's own timeout ends it by the round's deadline with what it found so far.
            timeout=remaining,
            recheck_delay=RECHECK_DELAY,
            suspect_interval=self.interval,
        )
        state.pull = pull = await probe_image(client, target)
        state.end()
        if not pull.ok:
            first = pull.failures[0].evidence if pull.failures else None
            state.fail(pull.evidence or first, pull.outcome)

    async def _delete(self, client: RegistryClient, state: _Round) -> None:
        """Delete the manifest by digest (which removes its tag), then the blobs this round
        uploaded; never a blob it found present."""
        recheck = time.monotonic() - self._delete_tried >= DELETE_RECHECK_SECONDS
        if self.deletes_supported is False and not recheck:
            state.deleted = None
            return
        state.begin(ControlStep.DELETE)
        self._delete_tried = time.monotonic()
        problems: list[Fetch] = []
        outcomes: list[WriteOutcome] = []
        image = state.image
        if state.tagged:
            outcomes.append(
                await delete_manifest(
                    client, image.repository, image.digest, problems, state.writes
                )
            )
        # Blobs go only once their manifest is gone: a tag left behind stays a whole image.
        if outcomes in ([], [WriteOutcome.OK]):
            for blob in state.uploaded:
                outcomes.append(
                    await delete_blob(client, image.repository, blob.digest, problems, state.writes)
                )
        state.end()
        if outcomes and outcomes[0] is WriteOutcome.UNSUPPORTED:
            self.deletes_supported, state.deleted = False, None
            return
        if outcomes and outcomes[0] is WriteOutcome.OK:
            self.deletes_supported = True
        state.deleted = all(o is WriteOutcome.OK for o in outcomes)
        if not state.deleted:
            state.fail(problems[0].evidence if problems else None)

    async def remove_leftovers(self, client: RegistryClient, now: float) -> int:
        """Delete control tags older than a round can last (a run ended mid-round left them);
        `latest`, rounds possibly in flight elsewhere and every other tag are left alone, and
        so is an image another tag still points at. How many tags went; never raises."""
        removed, self.leftovers_problem = 0, None
        try:
            async with asyncio.timeout(self.timeout):
                oldest = now - (self.interval + self.timeout)
                tags = await list_tags(client, self.repository)
                stale = [t for t in tags if (m := _ROUND_TAG.fullmatch(t)) and int(m[1]) < oldest]
                if not stale:
                    return 0
                kept = {
                    await manifest_digest(client, self.repository, t)
                    for t in tags
                    if t not in stale
                }
                groups: dict[str, int] = {}
                for tag in stale:
                    digest = await manifest_digest(client, self.repository, tag)
                    if digest is not None and digest not in kept:
                        groups[digest] = groups.get(digest, 0) + 1
                for digest, count in groups.items():
                    outcome = await delete_manifest(client, self.repository, digest)
                    if outcome is WriteOutcome.UNSUPPORTED:
                        self.deletes_supported, self._delete_tried = False, time.monotonic()
                        self.leftovers_problem = "the registry does not allow deletes"
                        break
                    if outcome is WriteOutcome.OK:
                        self.deletes_supported = True
                        removed += count
                    else:
                        self.leftovers_problem = f"deleting {digest} failed"
        except (RegistryError, PushError) as exc:
            self.leftovers_problem = str(exc)
        except TimeoutError:
            self.leftovers_problem = f"took longer than {self.timeout:g}s"
        except Exception as exc:  # the caller logs; a bug here must not stop the daemon
            self.leftovers_problem = f"unexpected error: {type(exc).__name__}"
        return removed
