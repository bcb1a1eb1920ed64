"""The published date a pull reads itself: the image config's `created` (schema 1: its newest
history entry's), else the manifest's `org.opencontainers.image.created` annotation, which Helm
and ORAS write on artifacts whose configs have no date."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from canary.config import PublishedSource
from canary.published.judge import Observation
from canary.registry.media import CREATED_ANNOTATION, ImageConfig, parse_timestamp

# Where a leaf sits in the walk (its index positions from the top), so that the date never
# depends on which request finished first.
Position = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LeafDates:
    """What one image or artifact manifest of a pull says about its date."""

    config: ImageConfig | str  # the parsed config, or why it could not be read
    annotation: str | None = None  # the manifest's created annotation, verbatim


def pulled_date(leaves: Mapping[Position, LeafDates], index_annotation: str | None) -> Observation:
    """The first leaf's (in index order) config date; failing every config, the first created
    annotation of a leaf, then of the top index."""
    if not leaves:
        return Observation(PublishedSource.CONFIG, None, "the pull did not reach the config blob")
    problems = []
    ordered = [leaves[position] for position in sorted(leaves)]
    for leaf in ordered:
        config = leaf.config
        if isinstance(config, str):
            problems.append(config)
        elif config.created is None:
            problem = config.created_problem or "no date"
            problems.append(f"{problem}, and the manifest no {CREATED_ANNOTATION} annotation")
        else:
            return Observation(PublishedSource.CONFIG, config.created)
    annotations = [leaf.annotation for leaf in ordered] + [index_annotation]
    for raw in annotations:
        if raw is None:
            continue
        stamp = parse_timestamp(raw)
        if stamp is not None:
            return Observation(PublishedSource.CONFIG, stamp)
        # A date that does not parse is the problem to show: it is the one a user can fix.
        problems.insert(
            0, f"the {CREATED_ANNOTATION} annotation is not an RFC 3339 date: {raw[:40]!r}"
        )
        break
    return Observation(PublishedSource.CONFIG, None, problems[0])
