"""The daemon's own RegistryCanaryBlobUnknown alerts: the twin of the Prometheus rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from canary.alertmanager import Alert, Notifier
from canary.config import Target
from canary.results import ImageResult

Key = tuple[str, str, str]
ALERT_NAME = "RegistryCanaryBlobUnknown"
SEVERITY = "page"
README = "https://github.com/registry-canary/registry-canary/blob/main/README.md"


@dataclass(slots=True)
class _Entry:
    blobs_unknown: int = 0
    since: datetime | None = None  # when this streak of unknown blobs was first confirmed
    last_success: datetime | None = None


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


class AlertSink:
    """Fires per environment and repository while any of its tags has blobs confirmed unknown,
    with the labels of the rule so that Alertmanager takes both for one alert."""

    def __init__(self) -> None:
        self._entries: dict[Key, _Entry] = {}
        self._notifier: Notifier | None = None
        self._external_labels: Mapping[str, str] = {}

    def configure(self, notifier: Notifier | None, external_labels: Mapping[str, str]) -> None:
        self._notifier = notifier
        self._external_labels = dict(external_labels)
        self._publish()

    def track(self, targets: Sequence[Target]) -> None:
        self._entries = {t.key: self._entries.get(t.key) or _Entry() for t in targets}
        self._publish()

    def consume(self, result: ImageResult) -> None:
        entry = self._entries.get((result.environment, result.repository, result.tag))
        if entry is None:
            return
        now = datetime.now(UTC)
        if result.ok:
            entry.last_success = now
        unknown = result.blobs_unknown
        if unknown is None:
            return  # the pull stopped before it could tell: the last verdict stands
        if unknown and not entry.blobs_unknown:
            entry.since = now
        entry.blobs_unknown = unknown
        if not unknown:
            entry.since = None
        self._publish()

    def alerts(self) -> list[Alert]:
        repositories: dict[tuple[str, str], list[_Entry]] = {}
        for (environment, repository, _), entry in self._entries.items():
            if entry.blobs_unknown:
                repositories.setdefault((environment, repository), []).append(entry)
        return [self._alert(env, repo, entries) for (env, repo), entries in repositories.items()]

    def _alert(self, environment: str, repository: str, entries: list[_Entry]) -> Alert:
        blobs = sum(e.blobs_unknown for e in entries)
        since = min(e.since for e in entries if e.since is not None)
        successes = [e.last_success for e in entries if e.last_success is not None]
        last = (
            f"Last verified pull: {_when(max(successes))}."
            if successes
            else "No verified pull since the canary started."
        )
        labels = {
            **self._external_labels,
            "alertname": ALERT_NAME,
            "environment": environment,
            "repository": repository,
            "severity": SEVERITY,
        }
        annotations = {
            "summary": f"{repository} in {environment}: blobs are unknown to the registry",
            "description": (
                f"{blobs} blob(s) of previously pushed images in {repository} answer 404 "
                f"BLOB_UNKNOWN in {environment}, confirmed by a second fetch; clients cannot "
                f"pull these images. Failing since {_when(since)}. {last}"
            ),
            "runbook_url": f"{README}#registrycanaryblobunknown",
            "dashboard": (
                f"/d/registry-canary/registry-canary?var-environment={environment}"
                f"&var-repository={repository}"
            ),
        }
        return Alert.make(labels, annotations, since)

    def _publish(self) -> None:
        if self._notifier is not None:
            self._notifier.set_firing(self.alerts())
