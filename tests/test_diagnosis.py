"""The diagnosis: kinds of pulls, signatures across an environment, and the sink behind them."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from canary.config import Target
from canary.diagnosis import (
    EXPLANATIONS,
    Diagnoser,
    Kind,
    Signature,
    classify,
    match,
    threshold,
)
from canary.metrics import Metrics
from canary.results import (
    BlobKind,
    BlobResult,
    ControlResult,
    ControlStep,
    Hop,
    ImageResult,
    ManifestResult,
    Outcome,
    WriteOperation,
    WriteOutcome,
)
from canary.sinks.diagnosis import DiagnosisSink
from tests.conftest import to_config

CREATED = datetime(2023, 5, 1, 12, tzinfo=UTC)
MANIFEST = "sha256:" + "a" * 64
LAYER = "sha256:" + "d" * 64
GAUGE = "registry_canary_diagnosis"
STALE_AFTER = 300.0


def targets(count: int, environments: tuple[str, ...] = ("prod",)) -> list[Target]:
    """`count` images (canary/i0, canary/i1, …) in each of `environments`."""
    document = {
        "environments": [
            {"name": n, "url": f"http://127.0.0.1:{5000 + i}"} for i, n in enumerate(environments)
        ],
        "images": [{"repository": "canary/i0", "tag": "v1"}],
    }
    firsts = list(to_config(document).targets())
    return [
        replace(first, image=first.image.model_copy(update={"repository": f"canary/i{i}"}))
        for first in firsts
        for i in range(count)
    ]


def pulled(
    index: int,
    outcome: Outcome = Outcome.OK,
    hop: Hop = Hop.REGISTRY,
    environment: str = "prod",
    stage: str = "blob",
) -> ImageResult:
    """A pull of canary/i<index> that ends with `outcome` on its layer, its manifest, or before
    either was fetched (`stage` "blob", "manifest" or "none")."""
    manifest_outcome = outcome if stage == "manifest" else Outcome.OK
    manifests = (ManifestResult(MANIFEST, manifest_outcome, 200, hop=hop),)
    blob = BlobResult(LAYER, BlobKind.LAYER, None, outcome, hop, 200, 10, outcome, 0.01)
    return ImageResult(
        environment=environment,
        repository=f"canary/i{index}",
        tag="v1",
        outcome=outcome,
        manifests=() if stage == "none" else manifests,
        blobs=(blob,) if stage == "blob" else (),
        published=(),
        started_at=CREATED,
        duration_seconds=0.05,
    )


def control(ok: bool = True, environment: str = "prod") -> ControlResult:
    """One control round that pushed a fresh image and pulled it back, or failed to."""
    return ControlResult(
        environment=environment,
        repository="canary/control",
        tag="control-1",
        digest=MANIFEST,
        outcome=Outcome.OK if ok else Outcome.UNAVAILABLE,
        failed_step=None if ok else ControlStep.PUSH,
        durations=((ControlStep.PUSH, 0.1),),
        writes=((WriteOperation.MANIFEST_PUT, WriteOutcome.OK if ok else WriteOutcome.FAILED),),
        deleted=True if ok else None,
        started_at=CREATED,
    )


def diagnose(
    kinds: Sequence[Outcome | tuple[Outcome, Hop]], with_control: bool | None = None
) -> frozenset[Signature]:
    """The signatures of one environment whose images ended with `kinds`, with a fresh control
    that passed (True), failed (False), or none (None)."""
    diagnoser = Diagnoser()
    diagnoser.track(targets(len(kinds)))
    for index, ending in enumerate(kinds):
        outcome, hop = ending if isinstance(ending, tuple) else (ending, Hop.REGISTRY)
        diagnoser.consume(pulled(index, outcome, hop))
    if with_control is not None:
        diagnoser.control(control(with_control), now=0.0, stale_after=STALE_AFTER)
    return diagnoser.signatures("prod", now=1.0)


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Log:
    """Records log calls as the sink makes them."""

    lines: list[dict[str, Any]] = field(default_factory=list)

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, "level": "warning", **fields})

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, "level": "info", **fields})

    def transitions(self) -> list[tuple[str, str, bool]]:
        return [(line["environment"], line["signature"], line["active"]) for line in self.lines]


@dataclass
class Rig:
    """A DiagnosisSink on a fresh registry, with a fake clock and a recording log."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Clock = field(default_factory=Clock)
    log: Log = field(default_factory=Log)
    sink: DiagnosisSink = field(init=False)

    def __post_init__(self) -> None:
        self.sink = DiagnosisSink(Metrics(self.registry), self.log, clock=self.clock)

    def gauge(self, signature: Signature, environment: str = "prod") -> float | None:
        labels = {"environment": environment, "signature": str(signature)}
        return self.registry.get_sample_value(GAUGE, labels)


class TestClassify:
    def test_ok(self) -> None:
        """A pull that verified everything is ok."""
        assert classify(pulled(0)) is Kind.OK

    @pytest.mark.parametrize(
        "outcome",
        [
            Outcome.BLOB_UNKNOWN,
            Outcome.MANIFEST_UNKNOWN,
            Outcome.DIGEST_MISMATCH,
            Outcome.SIZE_MISMATCH,
        ],
    )
    @pytest.mark.parametrize("hop", [Hop.REGISTRY, Hop.STORAGE])
    def test_data_loss_whatever_the_hop(self, outcome: Outcome, hop: Hop) -> None:
        """A data-loss outcome is data loss even when storage answered it: the data is gone."""
        assert classify(pulled(0, outcome, hop)) is Kind.DATA_LOSS

    @pytest.mark.parametrize("outcome", [Outcome.BLOB_UNKNOWN, Outcome.DIGEST_MISMATCH])
    def test_a_foreign_layers_source_is_not_the_registrys_data(self, outcome: Outcome) -> None:
        """Loss at a foreign layer's own source (foreign_layers: urls) never counts as the
        registry's lost data, so it can never raise legacy_data_unreadable."""
        assert classify(pulled(0, outcome, Hop.FOREIGN)) is Kind.OTHER

    @pytest.mark.parametrize(
        "outcome", [Outcome.CONNECTION_ERROR, Outcome.HTTP_5XX, Outcome.DENIED, Outcome.HTTP_4XX]
    )
    def test_storage_when_every_failure_is_at_the_storage_hop(self, outcome: Outcome) -> None:
        """Failures all answered through the redirect are storage's, even a refusal."""
        assert classify(pulled(0, outcome, Hop.STORAGE)) is Kind.STORAGE

    def test_mixed_hops_fall_back_to_the_outcome(self) -> None:
        """A failure at the registry beside one at storage is judged by the outcome instead."""
        base = pulled(0, Outcome.TIMEOUT, Hop.STORAGE)
        at_registry = replace(base.blobs[0], hop=Hop.REGISTRY, digest="sha256:" + "e" * 64)
        assert classify(replace(base, blobs=(base.blobs[0], at_registry))) is Kind.UNREACHABLE

    def test_storage_needs_a_failure_to_look_at(self) -> None:
        """A pull that failed before any fetch has no storage hop to blame."""
        assert classify(pulled(0, Outcome.TIMEOUT, stage="none")) is Kind.UNREACHABLE

    @pytest.mark.parametrize("outcome", [Outcome.UNAUTHORIZED, Outcome.DENIED])
    @pytest.mark.parametrize("stage", ["none", "manifest"])
    def test_auth(self, outcome: Outcome, stage: str) -> None:
        """Unauthorized and denied from the registry are auth failures."""
        assert classify(pulled(0, outcome, stage=stage)) is Kind.AUTH

    @pytest.mark.parametrize(
        "outcome",
        [
            Outcome.CONNECTION_ERROR,
            Outcome.TIMEOUT,
            Outcome.TLS_ERROR,
            Outcome.HTTP_5XX,
            Outcome.UNAVAILABLE,
            Outcome.INVALID_RESPONSE,
        ],
    )
    def test_unreachable(self, outcome: Outcome) -> None:
        """Transport errors and server errors from the registry mean it could not be reached."""
        assert classify(pulled(0, outcome)) is Kind.UNREACHABLE

    @pytest.mark.parametrize(
        "outcome",
        [
            Outcome.HTTP_4XX,
            Outcome.TOOMANYREQUESTS,
            Outcome.NAME_UNKNOWN,
            Outcome.MANIFEST_BLOB_UNKNOWN,
        ],
    )
    def test_other(self, outcome: Outcome) -> None:
        """Any other failure is other."""
        assert classify(pulled(0, outcome, stage="manifest")) is Kind.OTHER


class TestThreshold:
    @pytest.mark.parametrize(
        ("total", "expected"),
        [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (10, 3), (10_000, 3)],
    )
    def test_half_or_three_whichever_is_fewer(self, total: int, expected: int) -> None:
        """The threshold is half the images rounded up, at most three, at least one."""
        assert threshold(total) == expected


TOTALS = [1, 2, 3, 5, 10]


class TestSignatures:
    @pytest.mark.parametrize("total", TOTALS)
    def test_legacy_at_the_threshold(self, total: int) -> None:
        """Data loss on `threshold` images with a passing control is legacy; one fewer is not."""
        need = threshold(total)
        below = [Outcome.BLOB_UNKNOWN] * (need - 1) + [Outcome.OK] * (total - need + 1)
        at = [Outcome.BLOB_UNKNOWN] * need + [Outcome.OK] * (total - need)
        assert diagnose(below, with_control=True) == frozenset()
        assert diagnose(at, with_control=True) == {Signature.LEGACY_DATA_UNREADABLE}

    def test_legacy_needs_a_control(self) -> None:
        """Without a control round, data loss alone names no signature."""
        assert diagnose([Outcome.BLOB_UNKNOWN] * 5) == frozenset()

    def test_legacy_needs_a_passing_control(self) -> None:
        """When fresh pushes fail too, the data loss is not only of old data."""
        assert diagnose([Outcome.BLOB_UNKNOWN] * 5, with_control=False) == frozenset()

    def test_legacy_needs_a_fresh_control(self) -> None:
        """A passing control older than stale_after counts as absent."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(3))
        for index in range(3):
            diagnoser.consume(pulled(index, Outcome.BLOB_UNKNOWN))
        diagnoser.control(control(), now=100.0, stale_after=STALE_AFTER)
        assert diagnoser.signatures("prod", now=100.0 + STALE_AFTER) == {
            Signature.LEGACY_DATA_UNREADABLE
        }
        assert diagnoser.signatures("prod", now=100.0 + STALE_AFTER + 1) == frozenset()

    def test_legacy_holds_beside_other_failures(self) -> None:
        """Legacy looks only at data loss: other failures beside it do not hide it."""
        kinds = [Outcome.BLOB_UNKNOWN] * 3 + [Outcome.HTTP_4XX] * 7
        assert diagnose(kinds, with_control=True) == {Signature.LEGACY_DATA_UNREADABLE}

    @pytest.mark.parametrize("total", TOTALS)
    @pytest.mark.parametrize("with_control", [None, False])
    def test_registry_down_without_a_passing_control(
        self, total: int, with_control: bool | None
    ) -> None:
        """Every image unreachable, with no control or a failing one, is registry_down."""
        kinds = [Outcome.CONNECTION_ERROR] * total
        assert diagnose(kinds, with_control=with_control) == {Signature.REGISTRY_DOWN}

    def test_registry_down_not_while_the_control_passes(self) -> None:
        """A fresh push that pulls back shows the registry is up."""
        assert diagnose([Outcome.TIMEOUT] * 5, with_control=True) == frozenset()

    @pytest.mark.parametrize("total", [2, 3, 5, 10])
    def test_registry_down_needs_every_image(self, total: int) -> None:
        """One image that still pulls, or fails otherwise, is not a registry that is down."""
        assert diagnose([Outcome.UNAVAILABLE] * (total - 1) + [Outcome.OK]) == frozenset()
        assert diagnose([Outcome.UNAVAILABLE] * (total - 1) + [Outcome.HTTP_4XX]) == frozenset()

    def test_registry_down_counts_only_images_with_a_result(self) -> None:
        """Images not pulled yet neither hide nor make the signature."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(3))
        assert diagnoser.signatures("prod", now=0.0) == frozenset()
        diagnoser.consume(pulled(0, Outcome.TLS_ERROR))
        assert diagnoser.signatures("prod", now=0.0) == {Signature.REGISTRY_DOWN}

    @pytest.mark.parametrize("total", TOTALS)
    @pytest.mark.parametrize(
        ("signature", "ending"),
        [
            (Signature.STORAGE_UNREACHABLE, (Outcome.CONNECTION_ERROR, Hop.STORAGE)),
            (Signature.AUTH_BROKEN, (Outcome.UNAUTHORIZED, Hop.REGISTRY)),
        ],
    )
    def test_storage_and_auth_at_the_threshold(
        self, total: int, signature: Signature, ending: tuple[Outcome, Hop]
    ) -> None:
        """`threshold` images failing alike among ok ones name the signature; one fewer does not."""
        need = threshold(total)
        below: list[Outcome | tuple[Outcome, Hop]] = [ending] * (need - 1)
        at: list[Outcome | tuple[Outcome, Hop]] = [ending] * need
        assert diagnose(below + [Outcome.OK] * (total - need + 1)) == frozenset()
        assert diagnose(at + [Outcome.OK] * (total - need)) == {signature}

    @pytest.mark.parametrize(
        ("signature", "ending"),
        [
            (Signature.STORAGE_UNREACHABLE, (Outcome.TIMEOUT, Hop.STORAGE)),
            (Signature.AUTH_BROKEN, (Outcome.DENIED, Hop.REGISTRY)),
        ],
    )
    def test_storage_and_auth_need_most_of_the_failures(
        self, signature: Signature, ending: tuple[Outcome, Hop]
    ) -> None:
        """Past the threshold, the kind must still be more than half of the failing images."""
        half: list[Outcome | tuple[Outcome, Hop]] = [ending] * 4 + [Outcome.HTTP_4XX] * 4
        assert diagnose(half + [Outcome.OK] * 2) == frozenset()
        most: list[Outcome | tuple[Outcome, Hop]] = [ending] * 4 + [Outcome.HTTP_4XX] * 3
        assert diagnose(most + [Outcome.OK] * 3) == {signature}

    def test_mixed_failures_match_nothing(self) -> None:
        """Failures of every kind, none dominant, name no signature even with a passing control."""
        kinds: list[Outcome | tuple[Outcome, Hop]] = [
            Outcome.BLOB_UNKNOWN,
            Outcome.BLOB_UNKNOWN,
            (Outcome.CONNECTION_ERROR, Hop.STORAGE),
            (Outcome.CONNECTION_ERROR, Hop.STORAGE),
            Outcome.UNAUTHORIZED,
            Outcome.UNAUTHORIZED,
            Outcome.TIMEOUT,
            Outcome.TIMEOUT,
            Outcome.HTTP_4XX,
            Outcome.OK,
        ]
        assert diagnose(kinds) == frozenset()
        assert diagnose(kinds, with_control=True) == frozenset()

    def test_every_signature_has_an_explanation(self) -> None:
        """The status page and logs have a sentence for every signature."""
        assert set(EXPLANATIONS) == set(Signature)
        assert all(text.endswith(".") for text in EXPLANATIONS.values())


class TestDiagnoser:
    def test_a_recovered_image_moves_counts_back(self) -> None:
        """An image's later result replaces its kind rather than adding to the counts."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(2))
        diagnoser.consume(pulled(0, Outcome.BLOB_UNKNOWN))
        diagnoser.consume(pulled(0, Outcome.BLOB_UNKNOWN))
        diagnoser.consume(pulled(1))
        assert diagnoser.counts("prod") == {**dict.fromkeys(Kind, 0), Kind.DATA_LOSS: 1, Kind.OK: 1}
        diagnoser.consume(pulled(0))
        assert diagnoser.counts("prod") == {**dict.fromkeys(Kind, 0), Kind.OK: 2}

    def test_untracked_results_and_controls_are_ignored(self) -> None:
        """A pull or control of something not in the catalog changes nothing."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(1))
        diagnoser.consume(pulled(7, Outcome.BLOB_UNKNOWN))
        diagnoser.consume(pulled(0, Outcome.BLOB_UNKNOWN, environment="staging"))
        diagnoser.control(control(environment="staging"), now=0.0, stale_after=STALE_AFTER)
        assert sum(diagnoser.counts("prod").values()) == 0
        assert diagnoser.environments() == ["prod"]
        assert diagnoser.summary("staging", now=0.0)["control"] is None

    def test_track_drops_removed_targets_and_environments(self) -> None:
        """A reload forgets removed targets' kinds, and departed environments and their control."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(3, environments=("prod", "staging")))
        for index in range(3):
            diagnoser.consume(pulled(index, Outcome.BLOB_UNKNOWN))
            diagnoser.consume(pulled(index, Outcome.BLOB_UNKNOWN, environment="staging"))
        diagnoser.control(control(environment="staging"), now=0.0, stale_after=STALE_AFTER)
        assert diagnoser.signatures("staging", now=0.0) == {Signature.LEGACY_DATA_UNREADABLE}

        diagnoser.track(targets(1))
        assert diagnoser.environments() == ["prod"]
        assert diagnoser.counts("prod")[Kind.DATA_LOSS] == 1
        assert diagnoser.signatures("staging", now=0.0) == frozenset()

        diagnoser.track(targets(3, environments=("prod", "staging")))
        assert diagnoser.counts("prod")[Kind.DATA_LOSS] == 1  # the kept target keeps its kind
        assert sum(diagnoser.counts("staging").values()) == 0
        assert diagnoser.summary("staging", now=0.0)["control"] is None

    def test_forget_control(self) -> None:
        """An environment whose control probe was removed has no control any more."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(1))
        diagnoser.consume(pulled(0, Outcome.BLOB_UNKNOWN))
        diagnoser.control(control(), now=0.0, stale_after=STALE_AFTER)
        diagnoser.forget_control("prod")
        assert diagnoser.signatures("prod", now=0.0) == frozenset()

    def test_summary_is_json_ready(self) -> None:
        """The summary carries counts, the control's state and age, and explained signatures."""
        diagnoser = Diagnoser()
        diagnoser.track(targets(4))
        for index in range(3):
            diagnoser.consume(pulled(index, Outcome.BLOB_UNKNOWN))
        diagnoser.control(control(), now=10.0, stale_after=STALE_AFTER)
        summary = json.loads(json.dumps(diagnoser.summary("prod", now=25.0)))
        assert summary == {
            "environment": "prod",
            "total": 3,
            "counts": {
                "ok": 0,
                "data_loss": 3,
                "unreachable": 0,
                "storage": 0,
                "auth": 0,
                "other": 0,
            },
            "control": {"ok": True, "outcome": "ok", "age_seconds": 15.0, "stale": False},
            "signatures": [
                {
                    "signature": "legacy_data_unreadable",
                    "explanation": EXPLANATIONS[Signature.LEGACY_DATA_UNREADABLE],
                }
            ],
        }
        stale = diagnoser.summary("prod", now=10.0 + STALE_AFTER + 1)
        assert stale["control"]["stale"] is True
        assert stale["signatures"] == []

    def test_ten_thousand_targets_stay_counted_correctly(self) -> None:
        """Across many updates to a large catalog, the kept counts equal a recount from scratch."""
        catalog = targets(10_000)
        diagnoser = Diagnoser()
        diagnoser.track(catalog)
        endings = [
            (Outcome.OK, Hop.REGISTRY),
            (Outcome.BLOB_UNKNOWN, Hop.REGISTRY),
            (Outcome.CONNECTION_ERROR, Hop.REGISTRY),
            (Outcome.CONNECTION_ERROR, Hop.STORAGE),
            (Outcome.UNAUTHORIZED, Hop.REGISTRY),
            (Outcome.HTTP_4XX, Hop.REGISTRY),
        ]
        latest: dict[int, ImageResult] = {}
        rng = random.Random(7)  # noqa: S311 - a repeatable sequence, not a secret
        for _ in range(30_000):
            index = rng.randrange(len(catalog))
            latest[index] = pulled(index, *rng.choice(endings))
            diagnoser.consume(latest[index])
        recount = dict.fromkeys(Kind, 0)
        for result in latest.values():
            recount[classify(result)] += 1
        assert diagnoser.counts("prod") == recount
        assert diagnoser.signatures("prod", now=0.0) == match(recount, None)

        kept = catalog[:5_000]
        diagnoser.track(kept)
        recount = dict.fromkeys(Kind, 0)
        for index, result in latest.items():
            if index < 5_000:
                recount[classify(result)] += 1
        assert diagnoser.counts("prod") == recount


class TestDiagnosisSink:
    def test_every_signature_starts_at_zero(self) -> None:
        """Tracking puts all four signatures at 0 for every environment before any result."""
        rig = Rig()
        rig.sink.track(targets(2, environments=("prod", "staging")))
        for environment in ("prod", "staging"):
            for signature in Signature:
                assert rig.gauge(signature, environment) == 0.0
        assert rig.log.lines == []

    def test_legacy_turns_on_and_off_with_one_line_each(self) -> None:
        """The gauge follows the signature, logging a warning when it turns on and info when off."""
        rig = Rig()
        rig.sink.track(targets(3))
        rig.sink.control(control(), stale_after=STALE_AFTER)
        for index in range(3):
            rig.sink.consume(pulled(index, Outcome.BLOB_UNKNOWN))
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE) == 1.0
        assert rig.gauge(Signature.REGISTRY_DOWN) == 0.0
        for index in range(3):
            rig.sink.consume(pulled(index, Outcome.BLOB_UNKNOWN))  # still failing: no new line
        rig.sink.control(control(), stale_after=STALE_AFTER)
        rig.sink.refresh()
        assert len(rig.log.lines) == 1
        on = rig.log.lines[0]
        assert on["level"] == "warning"
        assert on["event"] == "diagnosis"
        assert on["explanation"] == EXPLANATIONS[Signature.LEGACY_DATA_UNREADABLE]
        assert on["counts"]["data_loss"] == 1  # one of one pulled image meets threshold(1)
        for index in range(3):
            rig.sink.consume(pulled(index))
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE) == 0.0
        assert rig.log.transitions() == [
            ("prod", "legacy_data_unreadable", True),
            ("prod", "legacy_data_unreadable", False),
        ]
        assert rig.log.lines[1]["level"] == "info"

    def test_a_stale_control_turns_legacy_off_on_refresh(self) -> None:
        """Without new control rounds, refresh turns legacy off once the last one is stale."""
        rig = Rig()
        rig.sink.track(targets(2))
        rig.sink.control(control(), stale_after=STALE_AFTER)
        rig.sink.consume(pulled(0, Outcome.DIGEST_MISMATCH))
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE) == 1.0
        rig.clock.now += STALE_AFTER
        rig.sink.refresh()
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE) == 1.0
        rig.clock.now += 1
        rig.sink.refresh()
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE) == 0.0
        assert rig.log.transitions()[-1] == ("prod", "legacy_data_unreadable", False)
        assert rig.sink.summary("prod")["control"]["stale"] is True

    def test_a_failing_control_is_not_legacy(self) -> None:
        """Data loss with a failing control stays undiagnosed."""
        rig = Rig()
        rig.sink.track(targets(2))
        rig.sink.control(control(ok=False), stale_after=STALE_AFTER)
        rig.sink.consume(pulled(0, Outcome.BLOB_UNKNOWN))
        rig.sink.consume(pulled(1, Outcome.BLOB_UNKNOWN))
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE) == 0.0

    def test_control_decides_registry_down(self) -> None:
        """All images unreachable is registry_down, except while a fresh push pulls back."""
        rig = Rig()
        rig.sink.track(targets(2))
        rig.sink.consume(pulled(0, Outcome.CONNECTION_ERROR))
        rig.sink.consume(pulled(1, Outcome.HTTP_5XX))
        assert rig.gauge(Signature.REGISTRY_DOWN) == 1.0
        rig.sink.control(control(), stale_after=STALE_AFTER)
        assert rig.gauge(Signature.REGISTRY_DOWN) == 0.0
        rig.sink.forget_control("prod")
        assert rig.gauge(Signature.REGISTRY_DOWN) == 1.0
        assert rig.log.transitions() == [
            ("prod", "registry_down", True),
            ("prod", "registry_down", False),
            ("prod", "registry_down", True),
        ]

    def test_consume_evaluates_only_its_environment(self) -> None:
        """A result re-evaluates its own environment; refresh re-evaluates them all."""
        rig = Rig()
        rig.sink.track(targets(1, environments=("prod", "staging")))
        rig.sink.control(control(environment="staging"), stale_after=STALE_AFTER)
        rig.sink.consume(pulled(0, Outcome.BLOB_UNKNOWN, environment="staging"))
        rig.clock.now += STALE_AFTER + 1
        rig.sink.consume(pulled(0, environment="prod"))
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE, "staging") == 1.0
        rig.sink.refresh()
        assert rig.gauge(Signature.LEGACY_DATA_UNREADABLE, "staging") == 0.0

    def test_reload_removes_environments_and_their_series(self) -> None:
        """An environment that left the catalog loses its series, its summary and its signatures."""
        rig = Rig()
        rig.sink.track(targets(1, environments=("prod", "staging")))
        rig.sink.consume(pulled(0, Outcome.UNAUTHORIZED, environment="staging"))
        assert rig.gauge(Signature.AUTH_BROKEN, "staging") == 1.0
        rig.sink.track(targets(1))
        for signature in Signature:
            assert rig.gauge(signature, "staging") is None
            assert rig.gauge(signature, "prod") == 0.0
        assert list(rig.sink.summaries()) == ["prod"]
        assert rig.log.transitions()[-1] == ("staging", "auth_broken", False)
        rig.sink.consume(pulled(0, Outcome.UNAUTHORIZED, environment="staging"))  # in flight
        assert rig.gauge(Signature.AUTH_BROKEN, "staging") is None

    def test_reload_removing_failing_targets_clears_the_signature(self) -> None:
        """Counts of removed targets leave with them, and the environment is re-evaluated."""
        rig = Rig()
        rig.sink.track(targets(3))
        rig.sink.consume(pulled(0))
        rig.sink.consume(pulled(1, Outcome.CONNECTION_ERROR, Hop.STORAGE))
        rig.sink.consume(pulled(2, Outcome.CONNECTION_ERROR, Hop.STORAGE))
        assert rig.gauge(Signature.STORAGE_UNREACHABLE) == 1.0
        rig.sink.track(targets(1))
        assert rig.gauge(Signature.STORAGE_UNREACHABLE) == 0.0
        assert rig.sink.summary("prod")["total"] == 1

    def test_summaries_for_status(self) -> None:
        """summaries() has one JSON-ready entry per tracked environment."""
        rig = Rig()
        rig.sink.track(targets(1, environments=("prod", "staging")))
        rig.sink.control(control(), stale_after=STALE_AFTER)
        rig.sink.consume(pulled(0, Outcome.BLOB_UNKNOWN))
        rig.clock.now += 5
        summaries = json.loads(json.dumps(rig.sink.summaries()))
        assert list(summaries) == ["prod", "staging"]
        assert summaries["prod"]["control"]["age_seconds"] == 5.0
        assert [s["signature"] for s in summaries["prod"]["signatures"]] == [
            "legacy_data_unreadable"
        ]
        assert summaries["staging"]["control"] is None
        assert summaries["staging"]["total"] == 0
