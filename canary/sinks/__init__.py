"""Consumers of probe results: metrics, logs and the state behind /status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from canary.config import Target
from canary.results import ImageResult


class Sink(Protocol):
    """Takes every finished pull; never raises into the scheduler, never blocks it."""

    def track(self, targets: Sequence[Target]) -> None:
        """The catalog is now `targets`: prepare new entries, forget removed ones."""

    def consume(self, result: ImageResult) -> None:
        """One pull finished."""
