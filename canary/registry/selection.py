"""Which entries of an index a pull follows, as containerd walks one: nested indexes to a bounded
depth, entries without a platform kept, attestation manifests skipped, and the platform filter
applied to the image manifests at the leaves."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from canary.registry.media import INDEXES, Descriptor, Index

# containerd sets no limit; a registry serving an endless chain of indexes must not hold a pull.
MAX_INDEX_DEPTH = 8

Platforms = Literal["all"] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Selection:
    """The entries of one index to fetch, and those skipped because they are attestations."""

    follow: tuple[Descriptor, ...]
    attestations: tuple[Descriptor, ...]


def select(index: Index, wanted: Platforms) -> Selection:
    """Follow every nested index and every entry without a platform (containerd's
    `FilterPlatforms` keeps those); image manifests only for a wanted platform."""
    follow, attestations = [], []
    for entry in index.manifests:
        if entry.attestation:
            attestations.append(entry)
        elif (
            wanted == "all"
            or entry.media_type in INDEXES
            or entry.platform is None
            or entry.platform in wanted
        ):
            follow.append(entry)
    return Selection(tuple(follow), tuple(attestations))


def missing_platforms(wanted: Platforms, reached: Iterable[str | None]) -> list[str]:
    """The wanted platforms that no image manifest the pull reached has."""
    if wanted == "all":
        return []
    found = set(reached)
    return [platform for platform in wanted if platform not in found]
