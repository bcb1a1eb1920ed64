"""Reads the date sources of one image beside its pull, each within its own timeout; a slow or
failing source is an observation with its reason, never an error of the pull."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from canary.config import PublishedSource, Target
from canary.published.gitlab import GitLabClient
from canary.published.judge import Observation
from canary.published.registry_api import published_at
from canary.registry.client import RegistryClient


async def _bounded(
    source: PublishedSource, reading: Awaitable[Observation], seconds: float
) -> Observation:
    try:
        async with asyncio.timeout(seconds):
            return await reading
    except TimeoutError:
        return Observation(source, None, f"no answer within {seconds:g}s")
    except Exception as exc:  # a bug in a date source must not touch the pull
        return Observation(source, None, f"unexpected error: {type(exc).__name__}")


async def external_dates(
    target: Target, registry: RegistryClient, gitlab: GitLabClient | None
) -> list[Observation]:
    """What every source other than the config blob says, in the configured order."""
    image = target.image
    readings: list[Awaitable[Observation]] = []
    for source in target.published_sources:
        if source is PublishedSource.GITLAB_API:
            if gitlab is None:
                readings.append(_none(source, "no GitLab is configured for the environment"))
                continue
            reading = gitlab.created_at(image.repository, image.tag, image.gitlab_project)
            readings.append(_bounded(source, reading, gitlab.settings.timeout))
        elif source is PublishedSource.GITLAB_REGISTRY_API:
            reading = published_at(registry, image.repository, image.tag)
            readings.append(_bounded(source, reading, target.timeout))
    return list(await asyncio.gather(*readings))


async def _none(source: PublishedSource, problem: str) -> Observation:
    return Observation(source, None, problem)
