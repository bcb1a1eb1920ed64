"""Measures the layers an environment's byte budget must cover, from the catalog's manifests, so
`check-config --measure` can say whether the budget keeps up before the daemon runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from canary.budget import shortfall
from canary.config import BlobCheck, Config, Target
from canary.registry.client import RegistryClient
from canary.registry.errors import RegistryError
from canary.registry.media import (
    ImageManifest,
    ManifestError,
    parse_manifest,
)
from canary.registry.selection import MAX_INDEX_DEPTH, select


@dataclass
class Measured:
    """The distinct layers of an environment's budgeted images, and what could not be read."""

    environment: str
    layers: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @property
    def catalog_bytes(self) -> int:
        return sum(self.layers.values())

    @property
    def largest(self) -> int:
        return max(self.layers.values(), default=0)


async def _manifests(
    client: RegistryClient, target: Target, reference: str, expected: str | None, depth: int
) -> list[ImageManifest]:
    """The image manifests a pull of `target` reaches from `reference`, as the probe walks it."""
    fetched = await client.get_manifest(target.image.repository, reference, expected)
    parsed = parse_manifest(fetched.body, fetched.content_type)
    if isinstance(parsed, ImageManifest):
        return [parsed]
    if depth >= MAX_INDEX_DEPTH:
        raise ManifestError(f"indexes nested more than {MAX_INDEX_DEPTH} deep")
    chosen = select(parsed, target.platforms).follow
    found = await asyncio.gather(
        *(_manifests(client, target, e.digest, e.digest, depth + 1) for e in chosen)
    )
    return [manifest for manifests in found for manifest in manifests]


async def _layers(client: RegistryClient, target: Target, into: Measured) -> None:
    image = target.image
    try:
        manifests = await _manifests(client, target, image.tag, image.digest, 0)
    except (RegistryError, ManifestError) as exc:
        reason = exc.fetch.outcome if isinstance(exc, RegistryError) else str(exc)
        into.unreadable.append(f"{image.reference}: {reason}")
        return
    unsized = 0
    for manifest in manifests:
        for layer in manifest.layers:
            if layer.foreign:
                continue  # not the registry's to serve, and never under the budget
            if layer.size is None:
                unsized += 1
            else:
                into.layers[layer.digest] = layer.size
    if unsized:
        into.unreadable.append(
            f"{image.reference}: {unsized} schema 1 layer(s) have no size, so the budget can "
            "only HEAD them; give the image blob_check: get"
        )


async def measure(config: Config) -> list[Measured]:
    """Read the manifests (never the layers) of every budgeted image, per environment."""
    measured = []
    for env in config.environments:
        targets = [t for t in config.targets((env.name,)) if t.blob_check is BlobCheck.BUDGET]
        if not targets:
            continue
        found = Measured(env.name)
        async with RegistryClient(env) as client:
            await asyncio.gather(*(_layers(client, t, found) for t in targets))
        measured.append(found)
    return measured


def budget_problems(config: Config, measured: Sequence[Measured]) -> list[tuple[str, str]]:
    """(dotted key, reason) for each budget that cannot verify its measured layers in time."""
    problems = []
    for found in measured:
        found_settings = config.budget_settings(config.environment(found.environment))
        assert found_settings is not None  # measured because it has budgeted images
        settings, cycle = found_settings
        too_large = {d: n for d, n in found.layers.items() if n > settings.bytes_per_hour}
        grantable = [n for n in found.layers.values() if n <= settings.bytes_per_hour]
        short = shortfall(
            len(found.layers),
            found.catalog_bytes,
            max(grantable, default=0),
            too_large,
            settings.bytes_per_hour,
            settings.full_verify_within,
            cycle,
        )
        if short is not None:
            problems.append((budget_key(config, found.environment, short.key), short.reason))
    return problems


def budget_key(config: Config, environment: str, key: str = "bytes_per_hour") -> str:
    """The dotted location of an environment's budget setting `key`, for messages about it."""
    for position, env in enumerate(config.environments):
        if env.name == environment and env.budget is not None:
            return f"environments.{position}.budget.{key}"
    return f"defaults.budget.{key}"
