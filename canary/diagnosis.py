"""Names what an environment's results point at together, from counts kept current per result."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from canary.config import Target
from canary.results import ControlResult, Hop, ImageResult, Outcome

Key = tuple[str, str, str]  # (environment, repository, tag)


class Signature(StrEnum):
    """A pattern of failures across an environment that names where to look."""

    LEGACY_DATA_UNREADABLE = "legacy_data_unreadable"
    REGISTRY_DOWN = "registry_down"
    STORAGE_UNREACHABLE = "storage_unreachable"
    AUTH_BROKEN = "auth_broken"


EXPLANATIONS: dict[Signature, str] = {
    Signature.LEGACY_DATA_UNREADABLE: (
        "Freshly pushed images pull back fine while long-lived images fail with data loss: "
        "previously written data is unreadable. Look at metadata and migration paths (blob link "
        "metadata, database reads), not at storage or the network."
    ),
    Signature.REGISTRY_DOWN: (
        "Every image fails to reach the registry (connection errors, timeouts, TLS errors, 5xx, "
        "unavailable) and no freshly pushed image pulls back: the registry is down or cut off. "
        "Look at the registry's processes, its load balancer and the network path to it."
    ),
    Signature.STORAGE_UNREACHABLE: (
        "Most failing pulls fail on the redirected fetch from storage while the registry itself "
        "answers: the storage backend or CDN behind the redirects is unreachable or refusing. "
        "Look at the storage service, its credentials and the network path to it."
    ),
    Signature.AUTH_BROKEN: (
        "Most failing pulls are refused as unauthorized or denied: authentication or "
        "authorization is broken. Look at the token service, the canary's credentials and the "
        "registry's access rules."
    ),
}


class Kind(StrEnum):
    """How one image's latest pull ended, as far as a diagnosis cares."""

    OK = "ok"
    DATA_LOSS = "data_loss"
    UNREACHABLE = "unreachable"
    STORAGE = "storage"
    AUTH = "auth"
    OTHER = "other"


_AUTH = frozenset({Outcome.UNAUTHORIZED, Outcome.DENIED})
_UNREACHABLE = frozenset(
    {
        Outcome.CONNECTION_ERROR,
        Outcome.TIMEOUT,
        Outcome.TLS_ERROR,
        Outcome.HTTP_5XX,
        Outcome.UNAVAILABLE,
        Outcome.INVALID_RESPONSE,
    }
)


def classify(result: ImageResult) -> Kind:
    """The kind of one pull: data loss wins whatever the hop, since the data is gone, except at a
    foreign layer's own source, which is not the registry's data."""
    if result.ok:
        return Kind.OK
    failures = result.failures
    if any(item.outcome.is_data_loss and item.hop is not Hop.FOREIGN for item in failures):
        return Kind.DATA_LOSS
    if failures and all(item.hop is Hop.STORAGE for item in failures):
        return Kind.STORAGE
    if result.outcome in _AUTH:
        return Kind.AUTH
    if result.outcome in _UNREACHABLE:
        return Kind.UNREACHABLE
    return Kind.OTHER


def threshold(total: int) -> int:
    """Half the environment's images, or three of them, whichever is fewer (at least one)."""
    return max(1, min(3, math.ceil(total / 2)))


def match(counts: Mapping[Kind, int], control_ok: bool | None) -> frozenset[Signature]:
    """The signatures that per-kind counts show; `control_ok` is None without a fresh control."""
    total = sum(counts.values())
    failing = total - counts.get(Kind.OK, 0)
    need = threshold(total)
    data_loss = counts.get(Kind.DATA_LOSS, 0)
    unreachable = counts.get(Kind.UNREACHABLE, 0)
    storage = counts.get(Kind.STORAGE, 0)
    auth = counts.get(Kind.AUTH, 0)
    found: set[Signature] = set()
    if control_ok is True and data_loss >= need:
        found.add(Signature.LEGACY_DATA_UNREADABLE)
    if total > 0 and unreachable == total and control_ok is not True:
        found.add(Signature.REGISTRY_DOWN)
    if storage >= need and storage * 2 > failing:
        found.add(Signature.STORAGE_UNREACHABLE)
    if auth >= need and auth * 2 > failing:
        found.add(Signature.AUTH_BROKEN)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class _Control:
    ok: bool
    outcome: Outcome
    at: float  # when the result arrived
    stale_after: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def fresh(self, now: float) -> bool:
        return self.age(now) <= self.stale_after


class Diagnoser:
    """Keeps each target's current kind and per-environment counts, updated in O(1) per result."""

    def __init__(self) -> None:
        self._kinds: dict[Key, Kind | None] = {}  # None until the target's first result
        self._counts: dict[str, dict[Kind, int]] = {}  # one per environment with targets
        self._controls: dict[str, _Control] = {}

    def track(self, targets: Sequence[Target]) -> None:
        """The catalog is now `targets`: keep known kinds, drop removed keys and environments."""
        self._kinds = {t.key: self._kinds.get(t.key) for t in targets}
        counts: dict[str, dict[Kind, int]] = {}
        for (environment, _, _), kind in self._kinds.items():
            tally = counts.setdefault(environment, dict.fromkeys(Kind, 0))
            if kind is not None:
                tally[kind] += 1
        self._counts = counts
        for environment in [e for e in self._controls if e not in counts]:
            del self._controls[environment]

    def consume(self, result: ImageResult) -> None:
        """Move the target of `result` to its new kind; results for untracked keys are ignored."""
        key = result.key
        if key not in self._kinds:
            return  # removed from the catalog while this pull was in flight
        old, new = self._kinds[key], classify(result)
        if old is new:
            return
        tally = self._counts[result.environment]
        if old is not None:
            tally[old] -= 1
        tally[new] += 1
        self._kinds[key] = new

    def control(self, result: ControlResult, now: float, stale_after: float) -> None:
        """Record an environment's latest control round; absent once older than `stale_after`."""
        if result.environment not in self._counts:
            return  # an environment without catalog images has nothing to diagnose
        self._controls[result.environment] = _Control(result.ok, result.outcome, now, stale_after)

    def forget_control(self, environment: str) -> None:
        """The environment no longer runs a control probe."""
        self._controls.pop(environment, None)

    def environments(self) -> list[str]:
        """Environments with at least one tracked target, sorted."""
        return sorted(self._counts)

    def counts(self, environment: str) -> dict[Kind, int]:
        """Targets per kind among those with a result; all zero for an unknown environment."""
        return dict(self._counts.get(environment) or dict.fromkeys(Kind, 0))

    def _control_ok(self, environment: str, now: float) -> bool | None:
        control = self._controls.get(environment)
        if control is None or not control.fresh(now):
            return None
        return control.ok

    def signatures(self, environment: str, now: float) -> frozenset[Signature]:
        """The signatures the environment shows at `now`."""
        tally = self._counts.get(environment)
        if tally is None:
            return frozenset()
        return match(tally, self._control_ok(environment, now))

    def summary(self, environment: str, now: float) -> dict[str, Any]:
        """The environment's diagnosis for /status, JSON-ready."""
        counts = self.counts(environment)
        control = self._controls.get(environment)
        active = self.signatures(environment, now)
        return {
            "environment": environment,
            "total": sum(counts.values()),
            "counts": {str(kind): count for kind, count in counts.items()},
            "control": None
            if control is None
            else {
                "ok": control.ok,
                "outcome": str(control.outcome),
                "age_seconds": round(control.age(now), 3),
                "stale": not control.fresh(now),
            },
            "signatures": [
                {"signature": str(signature), "explanation": EXPLANATIONS[signature]}
                for signature in Signature
                if signature in active
            ],
        }
