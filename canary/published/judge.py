"""Whether a published date is real: missing, a default no long-lived image can have, at odds
with the pin or the config blob, or ok."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from canary.config import PublishedSource
from canary.results import PublishedResult, PublishedStatus

# Dates on or before this are zero values (Go's year 1, the Unix epoch), never a build.
_ZERO_UNTIL = datetime(1970, 1, 2, tzinfo=UTC)
# Sources whose date is the config blob's `created`: the pin and the config blob judge them.
_FROM_CONFIG = frozenset({PublishedSource.CONFIG, PublishedSource.GITLAB_API})


@dataclass(frozen=True, slots=True)
class Observation:
    """What one source said: a date, or why there is none."""

    source: PublishedSource
    timestamp: datetime | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Context:
    """What a date is judged against."""

    now: datetime
    tolerance: timedelta
    pin: datetime | None = None
    config_created: datetime | None = None
    first_seen: datetime | None = None  # the canary's first sight of this tag with this digest
    min_age: timedelta | None = None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def judge(observation: Observation, context: Context) -> PublishedResult:
    source, stamp = observation.source, observation.timestamp
    if stamp is None:
        problem = observation.problem or "the source gives no date"
        return PublishedResult(None, source, PublishedStatus.MISSING, problem)
    default = _default(stamp, context)
    if default is not None:
        return PublishedResult(stamp, source, PublishedStatus.DEFAULT, default)
    mismatch = _mismatch(source, stamp, context)
    if mismatch is not None:
        return PublishedResult(stamp, source, PublishedStatus.MISMATCH, mismatch)
    return PublishedResult(stamp, source, PublishedStatus.OK)


def _default(stamp: datetime, context: Context) -> str | None:
    """Why `stamp` is a value no long-lived image can have, or None."""
    if stamp < _ZERO_UNTIL:
        return f"a zero date ({_iso(stamp)})"
    if stamp > context.now + context.tolerance:
        return f"a date in the future ({_iso(stamp)})"
    seen = context.first_seen
    if seen is not None and stamp > seen + context.tolerance:
        return f"newer than the canary's first sight of this tag and digest ({_iso(seen)})"
    if context.min_age is not None and stamp > context.now - context.min_age:
        return f"younger than min_age ({context.min_age.total_seconds():g}s)"
    return None


def _mismatch(source: PublishedSource, stamp: datetime, context: Context) -> str | None:
    """Why a real-looking `stamp` is still wrong, or None."""
    tolerance = context.tolerance
    if source in _FROM_CONFIG:
        if context.pin is not None:
            if abs(stamp - context.pin) >= tolerance:
                return f"the pin is {_iso(context.pin)}"
        elif (
            source is not PublishedSource.CONFIG
            and context.config_created is not None
            and abs(stamp - context.config_created) >= tolerance
        ):
            return f"the config blob says {_iso(context.config_created)}"
    elif context.config_created is not None and stamp < context.config_created - tolerance:
        # The registry's date is the push; no image is pushed before it is built.
        return f"before the image was built ({_iso(context.config_created)})"
    return None
