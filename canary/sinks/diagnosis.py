"""Publishes each environment's diagnosis as gauges, and logs when a signature turns on or off."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from canary.config import Target
from canary.diagnosis import EXPLANATIONS, Diagnoser, Signature
from canary.metrics import Metrics
from canary.results import ControlResult, ImageResult


class DiagnosisSink:
    """Keeps a Diagnoser current and mirrors its signatures into `registry_canary_diagnosis`."""

    def __init__(self, metrics: Metrics, log: Any, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self._log = log
        self._clock = clock
        self._diagnoser = Diagnoser()
        self._active: dict[str, frozenset[Signature]] = {}  # per tracked environment

    def track(self, targets: Sequence[Target]) -> None:
        self._diagnoser.track(targets)
        environments = set(self._diagnoser.environments())
        gauge = self.metrics.diagnosis
        for environment in [e for e in self._active if e not in environments]:
            for signature in self._active.pop(environment):
                self._log.info(
                    "diagnosis",
                    environment=environment,
                    signature=str(signature),
                    active=False,
                    explanation=EXPLANATIONS[signature],
                    counts=None,
                    reason="environment left the catalog",
                )
            for signature in Signature:
                with contextlib.suppress(KeyError):
                    gauge.remove(environment, signature)
        for environment in sorted(environments - self._active.keys()):
            # Present at 0 from the start, so a rule sees 0 rather than nothing.
            for signature in Signature:
                gauge.labels(environment, signature).set(0)
            self._active[environment] = frozenset()
        # Removed targets change the counts of environments that stay.
        self.refresh()

    def consume(self, result: ImageResult) -> None:
        if result.environment not in self._active:
            return
        self._diagnoser.consume(result)
        self._evaluate(result.environment, self._clock())

    def control(self, result: ControlResult, stale_after: float) -> None:
        """An environment's control round finished; it counts for `stale_after` seconds."""
        now = self._clock()
        self._diagnoser.control(result, now, stale_after)
        if result.environment in self._active:
            self._evaluate(result.environment, now)

    def forget_control(self, environment: str) -> None:
        """The environment no longer runs a control probe."""
        self._diagnoser.forget_control(environment)
        if environment in self._active:
            self._evaluate(environment, self._clock())

    def refresh(self) -> None:
        """Re-evaluate every environment, so that a control result going stale takes effect."""
        now = self._clock()
        for environment in self._diagnoser.environments():
            self._evaluate(environment, now)

    def summary(self, environment: str) -> dict[str, Any]:
        return self._diagnoser.summary(environment, self._clock())

    def summaries(self) -> dict[str, dict[str, Any]]:
        """Every tracked environment's summary, by name."""
        now = self._clock()
        return {e: self._diagnoser.summary(e, now) for e in self._diagnoser.environments()}

    def _evaluate(self, environment: str, now: float) -> None:
        before = self._active[environment]
        after = self._diagnoser.signatures(environment, now)
        if after == before:
            return
        self._active[environment] = after
        counts = {str(kind): n for kind, n in self._diagnoser.counts(environment).items()}
        for signature in Signature:
            if (signature in after) == (signature in before):
                continue
            on = signature in after
            self.metrics.diagnosis.labels(environment, signature).set(1 if on else 0)
            emit = self._log.warning if on else self._log.info
            emit(
                "diagnosis",
                environment=environment,
                signature=str(signature),
                active=on,
                explanation=EXPLANATIONS[signature],
                counts=counts,
            )
