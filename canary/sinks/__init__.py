"""Consumers of probe results: metrics, logs, alerts, diagnosis and the state behind /status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from canary.config import Target
from canary.results import ControlResult, ImageResult


class Sink(Protocol):
    """Takes every finished pull; never raises into the scheduler, never blocks it."""

    def track(self, targets: Sequence[Target]) -> None:
        """The catalog is now `targets`: prepare new entries, forget removed ones."""

    def consume(self, result: ImageResult) -> None:
        """One pull finished."""


class ControlSink(Protocol):
    """Takes every finished control round."""

    def control(self, result: ControlResult, stale_after: float) -> None:
        """A control round finished; its verdict means nothing after `stale_after` seconds."""

    def forget_control(self, environment: str) -> None:
        """The environment no longer has a control probe."""
