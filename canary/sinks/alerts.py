"""The daemon's own RegistryCanaryBlobUnknown alerts: the twin of the Prometheus rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from canary.alertmanager import Alert, Notifier
from canary.config import Target
from canary.results import ImageResult

Key = tuple[str, str, str]
Repository = tuple[str, str]  # (environment, repository)
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
        self._repositories: dict[Repository, list[_Entry]] = {}
        self._alerts: dict[Repository, Alert] = {}
        self._notifier: Notifier | None = None
        self._external_labels: Mapping[str, str] = {}

    def configure(self, notifier: Notifier | None, external_labels: Mapping[str, str]) -> None:
        self._notifier = notifier
        self._external_labels = dict(external_labels)
        self._rebuild()

    def track(self, targets: Sequence[Target]) -> None:
        self._entries = {t.key: self._entries.get(t.key) or _Entry() for t in targets}
        self._repositories = {}
        for (environment, repository, _), entry in self._entries.items():
            self._repositories.setdefault((environment, repository), []).append(entry)
        self._rebuild()

    def consume(self, result: ImageResult) -> None:
        entry = self._entries.get(result.key)
        if entry is None:
            return
        now = datetime.now(UTC)
        if result.ok:
            entry.last_success = now
        unknown = result.blobs_unknown
        if unknown is None:
            return  # the pull stopped before it could tell: the last verdict stands
        changed = unknown != entry.blobs_unknown
        if unknown and not entry.blobs_unknown:
            entry.since = now
        entry.blobs_unknown = unknown
        if not unknown:
            entry.since = None
        repository = (result.environment, result.repository)
        # A verified pull of a firing repository's other tag changes its "last verified pull".
        if changed or (result.ok and repository in self._alerts):
            self._refresh(repository)

    def alerts(self) -> list[Alert]:
        return list(self._alerts.values())

    def _refresh(self, repository: Repository) -> None:
        """Rebuild one repository's alert: only its tags are read, however many others fire."""
        alert = self._build(repository)
        if alert is not None:
            self._alerts[repository] = alert
            if self._notifier is not None:
                self._notifier.put(alert)
            return
        gone = self._alerts.pop(repository, None)
        if gone is not None and self._notifier is not None:
            self._notifier.resolve(gone.labels)

    def _rebuild(self) -> None:
        built = {repository: self._build(repository) for repository in self._repositories}
        self._alerts = {repository: alert for repository, alert in built.items() if alert}
        if self._notifier is not None:
            self._notifier.set_firing(self._alerts.values())

    def _build(self, repository: Repository) -> Alert | None:
        tags = self._repositories.get(repository, [])
        entries = [e for e in tags if e.blobs_unknown]
        return self._alert(*repository, entries, tags) if entries else None

    def _alert(
        self, environment: str, repository: str, entries: list[_Entry], tags: list[_Entry]
    ) -> Alert:
        blobs = sum(e.blobs_unknown for e in entries)
        since = min(e.since for e in entries if e.since is not None)
        # Of any tag of the repository, as the rule's annotation reads it.
        successes = [e.last_success for e in tags if e.last_success is not None]
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
