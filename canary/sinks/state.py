"""The latest result of every catalog entry: what /status shows and /readyz decides on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from canary.config import Target
from canary.results import ControlResult, ImageResult

Key = tuple[str, str, str]


def _stamp(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@dataclass(slots=True)
class Entry:
    result: ImageResult | None = None
    last_probe: datetime | None = None
    last_success: datetime | None = None


class StateSink:
    def __init__(self) -> None:
        self._entries: dict[Key, Entry] = {}
        self._ready: set[str] = set()
        self._controls: dict[str, tuple[ControlResult, datetime]] = {}

    def track(self, targets: Sequence[Target]) -> None:
        keys = [target.key for target in targets]
        self._entries = {key: self._entries.get(key) or Entry() for key in keys}
        self._ready &= {key[0] for key in keys}

    def consume(self, result: ImageResult) -> None:
        key = result.key
        entry = self._entries.get(key)
        if entry is None:
            return
        finished = datetime.now(UTC)
        entry.result, entry.last_probe = result, finished
        if result.ok:
            entry.last_success = finished
        environment = result.environment
        if environment not in self._ready and all(
            e.result is not None for k, e in self._entries.items() if k[0] == environment
        ):
            # Latched: entries added later by a reload do not make a ready sidecar unready.
            self._ready.add(environment)

    def environments(self) -> dict[str, bool]:
        """Each environment of the catalog, and whether it has finished a first round."""
        return {key[0]: key[0] in self._ready for key in self._entries}

    @property
    def ready(self) -> bool:
        environments = self.environments()
        return bool(environments) and all(environments.values())

    def snapshot(self) -> list[dict[str, Any]]:
        images = []
        for (environment, repository, tag), entry in self._entries.items():
            result = entry.result
            images.append(
                {
                    "environment": environment,
                    "repository": repository,
                    "tag": tag,
                    "ok": result.ok if result else None,
                    "outcome": str(result.outcome) if result else None,
                    "last_probe": _stamp(entry.last_probe),
                    "last_success": _stamp(entry.last_success),
                    "published": [p.to_dict() for p in result.published] if result else None,
                    "result": result.to_dict() if result else None,
                }
            )
        return images

    def control(self, result: ControlResult, stale_after: float) -> None:
        self._controls[result.environment] = (result, datetime.now(UTC))

    def forget_control(self, environment: str) -> None:
        self._controls.pop(environment, None)

    def controls(self) -> dict[str, dict[str, Any]]:
        """The last control round of each environment that has one, for /status."""
        return {
            environment: {**result.to_dict(), "finished_at": _stamp(finished)}
            for environment, (result, finished) in self._controls.items()
        }
