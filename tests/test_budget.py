"""The byte budget of `blob_check: budget`, driven by simulated time only."""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary.budget import (
    BlobBudget,
    Shortfall,
    format_bytes,
    format_duration,
    required_bytes_per_hour,
)
from canary.config import Budget

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
HOUR = 3600.0
T = 60.0  # every simulated image is pulled this often

Layer = tuple[str, int]
Image = tuple[str, str, str]
# What a simulated download ends with, given its layer: (verified, bytes received).
Outcome = Callable[[str, int], tuple[bool, int]]


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def image(name: str) -> Image:
    return ("prod", f"team/{name}", "v1")


def make(bytes_per_hour: int, hold: float = 2 * T, within: float = 86400.0) -> BlobBudget:
    budget = Budget.model_validate(
        {"bytes_per_hour": bytes_per_hour, "full_verify_within": f"{within}s"}
    )
    return BlobBudget(budget, hold, 0.0)


def make_catalog(seed: int, images: int = 40) -> dict[Image, list[Layer]]:
    """Images of 1 to 5 layers between 1 KiB and 300 MiB; about one layer in five is shared."""
    rng = random.Random(seed)  # noqa: S311 - a repeatable catalog, not a secret
    pool: list[Layer] = []
    catalog: dict[Image, list[Layer]] = {}
    for i in range(images):
        layers: list[Layer] = []
        for _ in range(rng.randint(1, 5)):
            if pool and rng.random() < 0.2:
                layer = rng.choice(pool)
            else:
                layer = (digest(len(pool) + 1), rng.randint(KiB, 300 * MiB))
                pool.append(layer)
            if layer not in layers:
                layers.append(layer)
        catalog[image(f"app{i}")] = layers
    return catalog


def distinct(catalog: dict[Image, list[Layer]]) -> dict[str, int]:
    return {d: size for layers in catalog.values() for d, size in layers}


def required_for(catalog: dict[Image, list[Layer]], within: float) -> int:
    sizes = distinct(catalog)
    required = required_bytes_per_hour(sum(sizes.values()), max(sizes.values()), within, T)
    assert required is not None
    return required


@dataclass
class Run:
    """What a simulation observed, recorded independently of the budget's own accounting."""

    budget: BlobBudget
    first_seen: dict[str, float] = field(default_factory=dict)
    verified: dict[str, list[float]] = field(default_factory=dict)
    peak_window: int = 0  # most bytes downloaded in any 3600 s ending at a download
    peak_oldest_age: float = 0.0
    downloads: int = 0


def simulate(
    catalog: dict[Image, list[Layer]],
    bytes_per_hour: int,
    within: float,
    duration: float,
    outcome: Outcome = lambda _digest, size: (True, size),
) -> Run:
    """Pull every image every T seconds at its own offset: take each layer, finish the
    downloads granted, then settle the image."""
    run = Run(make(bytes_per_hour, within=within))
    offsets = random.Random(1).sample(  # noqa: S311 - repeatable offsets
        range(int(T) * 100), len(catalog)
    )
    pulls = sorted(
        (offset / 100 + k * T, key)
        for offset, key in zip(offsets, catalog, strict=True)
        for k in range(int(duration // T))
    )
    window: deque[tuple[float, int]] = deque()
    in_window = 0
    for now, key in pulls:
        for d, size in catalog[key]:
            run.first_seen.setdefault(d, now)
            if not run.budget.take(d, size, now):
                continue
            verified, received = outcome(d, size)
            run.downloads += 1
            window.append((now, received))
            in_window += received
            while window[0][0] < now - HOUR:
                in_window -= window.popleft()[1]
            run.peak_window = max(run.peak_window, in_window)
            run.budget.done(d, verified, received, now)
            if verified:
                run.verified.setdefault(d, []).append(now)
        run.budget.settle(key, [d for d, _ in catalog[key]])
        age = run.budget.oldest_age(now)
        assert age is not None
        run.peak_oldest_age = max(run.peak_oldest_age, age)
    return run


WITHIN = 6 * HOUR
CATALOG = make_catalog(seed=2024)


@pytest.fixture(scope="module")
def sufficient() -> Run:
    """Three limits' worth of pulls at 1.25 times the required budget."""
    bytes_per_hour = int(1.25 * required_for(CATALOG, WITHIN))
    return simulate(CATALOG, bytes_per_hour, WITHIN, 3 * WITHIN)


@pytest.fixture(scope="module")
def insufficient() -> Run:
    """Three limits' worth of pulls at half the required budget."""
    bytes_per_hour = int(0.5 * required_for(CATALOG, WITHIN))
    return simulate(CATALOG, bytes_per_hour, WITHIN, 3 * WITHIN)


class TestSimulation:
    def test_catalog_is_realistic(self) -> None:
        """The simulated catalog has about 40 images, shared layers and a wide spread of sizes."""
        sizes = distinct(CATALOG)
        listed = sum(len(layers) for layers in CATALOG.values())
        assert len(CATALOG) == 40
        assert listed > len(sizes)  # some layers are shared
        assert min(sizes.values()) < 10 * MiB
        assert max(sizes.values()) > 250 * MiB

    def test_every_layer_verified_in_time(self, sufficient: Run) -> None:
        """Each layer is first verified within full_verify_within of its first sighting, and
        no two consecutive verifications are further apart."""
        assert set(sufficient.verified) == set(distinct(CATALOG))
        for d, times in sufficient.verified.items():
            assert times[0] - sufficient.first_seen[d] <= WITHIN
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert max(gaps) <= WITHIN
            assert len(times) >= 3

    def test_no_hour_exceeds_the_budget(self, sufficient: Run) -> None:
        """The bytes downloaded in the 3600 s ending at any download stay within bytes_per_hour,
        and the budget is in fact used."""
        bytes_per_hour = sufficient.budget.bytes_per_hour
        assert sufficient.peak_window <= bytes_per_hour
        assert sufficient.peak_window > 0.9 * bytes_per_hour

    def test_oldest_age_stays_within_limit(self, sufficient: Run) -> None:
        """The oldest verification is never older than full_verify_within."""
        assert 0 < sufficient.peak_oldest_age <= WITHIN

    def test_sufficient_budget_has_no_shortfall(self, sufficient: Run) -> None:
        """With a quarter more than required, the budget reports no shortfall, and it counts
        every distinct layer and every verified byte."""
        budget = sufficient.budget
        assert budget.shortfall(T) is None
        assert budget.layers == len(distinct(CATALOG))
        assert budget.catalog_bytes == sum(distinct(CATALOG).values())
        verified = sum(distinct(CATALOG)[d] * len(t) for d, t in sufficient.verified.items())
        assert budget.verified_bytes == verified

    def test_insufficient_budget_names_both_numbers(self, insufficient: Run) -> None:
        """At half the required budget, shortfall states the catalog, the limit, the required
        and the configured bytes_per_hour."""
        required = required_for(CATALOG, WITHIN)
        budget = insufficient.budget
        catalog = format_bytes(budget.catalog_bytes)
        assert budget.shortfall(T) == Shortfall(
            "bytes_per_hour",
            f"full verification of {budget.layers} layers ({catalog}) within 6h needs "
            f"bytes_per_hour of at least {format_bytes(required)}; it is "
            f"{format_bytes(budget.bytes_per_hour)}",
        )

    def test_insufficient_budget_still_capped(self, insufficient: Run) -> None:
        """At half the required budget the hourly cap still holds, and layers do go stale."""
        assert insufficient.peak_window <= insufficient.budget.bytes_per_hour
        assert insufficient.peak_oldest_age > WITHIN

    def test_failures_stay_within_the_cap(self) -> None:
        """With a third of downloads failing (404s, partial bodies, mismatches) the hourly cap
        holds against what was actually received."""
        catalog = make_catalog(seed=7, images=15)
        rng = random.Random(3)  # noqa: S311 - a repeatable sequence, not a secret

        def flaky(_digest: str, size: int) -> tuple[bool, int]:
            roll = rng.random()
            if roll < 0.1:
                return False, 0
            if roll < 0.2:
                return False, rng.randint(0, size)
            if roll < 0.3:
                return False, size
            return True, size

        bytes_per_hour = required_for(catalog, 6 * HOUR)
        run = simulate(catalog, bytes_per_hour, 6 * HOUR, 3 * 6 * HOUR, flaky)
        assert run.downloads > 80
        assert run.peak_window <= bytes_per_hour


class TestRequirement:
    def test_required_covers_catalog_and_largest_layer(self) -> None:
        """The requirement is the catalog spread over the usable time plus the largest layer."""
        # 5000 MiB over 6h - 1h = 5h is 1000 MiB per hour; plus a 100 MiB burst.
        assert required_bytes_per_hour(5000 * MiB, 100 * MiB, 6 * HOUR, HOUR) == 1100 * MiB

    def test_small_layers_need_a_sixtieth_of_burst(self) -> None:
        """With tiny layers the burst is bytes_per_hour / 60, so the requirement is 60/59 of
        the catalog rate."""
        assert required_bytes_per_hour(59 * 3600, 1, 2 * HOUR, HOUR) == 60 * 3600

    def test_impossible_when_cycle_reaches_the_limit(self) -> None:
        """No budget helps when an image waits as long as full_verify_within between pulls."""
        assert required_bytes_per_hour(GiB, MiB, HOUR, HOUR) is None

    def test_exactly_required_is_enough(self) -> None:
        """A budget of exactly the requirement reports no shortfall; one byte less does."""
        within, cycle = 6 * HOUR, HOUR
        required = required_bytes_per_hour(5000 * MiB, 100 * MiB, within, cycle)
        assert required is not None
        for bytes_per_hour, short in ((required, False), (required - 1, True)):
            budget = make(bytes_per_hour, within=within)
            for n in range(50):
                budget.take(digest(n), 100 * MiB, 0.0)
            assert (budget.shortfall(cycle) is not None) == short

    def test_cycle_too_long_is_reported(self) -> None:
        """A cycle as long as the limit is reported as impossible at any budget."""
        budget = make(GiB, within=HOUR)
        budget.take(digest(1), MiB, 0.0)
        assert budget.shortfall(HOUR) == Shortfall(
            "full_verify_within",
            "full verification within 1h is impossible when an image is pulled only every 1h",
        )

    def test_nothing_measured_is_no_shortfall(self) -> None:
        """Before any layer is seen there is nothing to fall short of."""
        assert make(MiB).shortfall(T) is None


class TestFormatting:
    @pytest.mark.parametrize(
        ("n", "text"),
        [(0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (3 * GiB // 2, "1.5 GiB"),
         (600 * MiB, "600.0 MiB"), (1024 * MiB - 1, "1.0 GiB"), (5 * 1024 * GiB, "5.0 TiB")],
    )  # fmt: skip
    def test_bytes(self, n: int, text: str) -> None:
        """Sizes are shown in binary units with one decimal, bytes as a whole number."""
        assert format_bytes(n) == text

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(86400.0, "24h"), (5400.0, "90m"), (45.0, "45s"), (60.0, "1m"), (0.5, "0.5s"),
         (3601.0, "3601s")],
    )  # fmt: skip
    def test_duration(self, seconds: float, text: str) -> None:
        """Durations use the largest whole unit of the config's notation."""
        assert format_duration(seconds) == text


# bytes_per_hour = 60 MiB makes the burst 1 MiB for layers up to 1 MiB, refilled at
# 59 MiB per hour: about 16.8 KiB per second.
SMALL = 60 * MiB


class TestTooLarge:
    def test_layer_larger_than_budget_is_never_granted(self) -> None:
        """A layer larger than bytes_per_hour is never granted, however long it waits, while
        the others still rotate."""
        budget = make(SMALL)
        granted = []
        grants = 0
        for step in range(200):
            now = step * T
            granted.append(budget.take(digest(1), SMALL + 1, now))
            if budget.take(digest(2), MiB, now):
                grants += 1
                budget.done(digest(2), True, MiB, now)
        assert not any(granted)
        # The 1 MiB burst refills at 59 MiB per hour, just short of 1 MiB per step: the other
        # layer is granted at every second step.
        assert grants == 100
        assert budget.verified_bytes == grants * MiB

    def test_shortfall_names_the_layer(self) -> None:
        """shortfall says which layer is too large, its size and the budget."""
        budget = make(SMALL)
        budget.take(digest(1), 2 * SMALL, 0.0)
        assert budget.shortfall(T) == Shortfall(
            "bytes_per_hour",
            f"layer {digest(1)} of 120.0 MiB larger than bytes_per_hour (60.0 MiB) can never be "
            "downloaded in full",
        )

    def test_shortfall_counts_several(self) -> None:
        """Several too-large layers are reported with their count and the largest size."""
        budget = make(SMALL)
        budget.take(digest(1), 2 * SMALL, 0.0)
        budget.take(digest(2), 3 * SMALL, 0.0)
        assert budget.shortfall(T) == Shortfall(
            "bytes_per_hour",
            "2 layers, up to 180.0 MiB larger than bytes_per_hour (60.0 MiB) can never be "
            "downloaded in full",
        )

    def test_too_large_layer_does_not_shrink_the_rate(self) -> None:
        """A layer that can never be granted does not raise the burst."""
        budget = make(SMALL)
        budget.take(digest(1), 2 * SMALL, 0.0)
        assert budget.burst == MiB
        assert budget.rate == pytest.approx(59 * MiB / HOUR)


class TestChangingCatalogAndSettings:
    def test_the_burst_follows_the_largest_layer_still_known(self) -> None:
        """When the largest layer leaves the catalog, the burst shrinks back and the steady
        rate grows again: one large layer gone does not slow the rotation for ever."""
        budget = make(GiB)
        budget.take(digest(1), 512 * MiB, 0.0)
        budget.settle(("e", "big", "v1"), [digest(1)])
        budget.take(digest(2), MiB, 0.0)
        budget.settle(("e", "small", "v1"), [digest(2)])
        assert budget.burst == 512 * MiB
        budget.forget_except([("e", "small", "v1")])
        assert budget.layers == 1
        assert budget.burst == GiB / 60
        assert budget.rate == pytest.approx(GiB * 59 / 60 / HOUR)

    def test_reconfigure_keeps_what_was_verified(self) -> None:
        """New settings keep each layer's verification time; a layer too large for the old
        budget becomes grantable under a larger one."""
        budget = make(SMALL)
        assert budget.take(digest(1), MiB, 0.0)
        budget.done(digest(1), True, MiB, 0.0)
        assert not budget.take(digest(2), 2 * SMALL, 0.0)
        assert budget.shortfall(T) is not None
        budget.reconfigure(
            Budget.model_validate({"bytes_per_hour": 4 * SMALL, "full_verify_within": "24h"}),
            hold=4 * T,
        )
        assert (budget.bytes_per_hour, budget.hold, budget.layers) == (4 * SMALL, 4 * T, 2)
        assert budget.oldest_age(100.0) == 100.0
        assert budget.shortfall(T) is None
        assert budget.take(digest(2), 2 * SMALL, 3600.0)


class TestFailedDownload:
    def test_not_found_is_refunded_and_retried(self) -> None:
        """A 404 (nothing received) costs nothing: the layer is granted again a second later."""
        budget = make(SMALL)
        assert budget.take(digest(1), MiB, 0.0)
        budget.done(digest(1), False, 0, 0.0)
        assert budget.take(digest(1), MiB, 1.0)
        assert budget.verified_bytes == 0

    def test_mismatch_is_not_refunded(self) -> None:
        """A digest mismatch after a whole body costs the whole layer: the bucket must refill
        before the layer is granted again."""
        budget = make(SMALL)
        assert budget.take(digest(1), MiB, 0.0)
        budget.done(digest(1), False, MiB, 0.0)
        assert not budget.take(digest(1), MiB, 1.0)
        assert not budget.take(digest(1), MiB, 55.0)
        assert budget.take(digest(1), MiB, 65.0)

    def test_failed_layer_keeps_its_place(self) -> None:
        """A failed re-verification keeps the layer's last verification time, so it stays
        ahead of a layer verified since."""
        budget = make(SMALL)
        assert budget.take(digest(1), 400 * KiB, 0.0)
        assert budget.take(digest(2), 400 * KiB, 0.0)
        budget.done(digest(1), True, 400 * KiB, 0.0)
        budget.done(digest(2), True, 400 * KiB, 5.0)
        assert budget.take(digest(1), 400 * KiB, 60.0)  # assigns both again
        assert budget.take(digest(2), 400 * KiB, 60.0)
        budget.done(digest(2), True, 400 * KiB, 60.0)
        budget.done(digest(1), False, 0, 70.0)
        assert budget.oldest_age(70.0) == 70.0
        # Room for one of them at t=70: the one verified longest ago.
        assert budget.take(digest(1), 400 * KiB, 70.0)
        assert not budget.take(digest(2), 400 * KiB, 70.0)


class TestSharing:
    def test_shared_layer_is_taken_once(self) -> None:
        """Two images sharing a layer in one round: the first take downloads, the second HEADs."""
        budget = make(SMALL)
        assert budget.take(digest(1), MiB, 0.0)
        assert not budget.take(digest(1), MiB, 0.0)
        budget.done(digest(1), True, MiB, 0.0)
        assert budget.verified_bytes == MiB

    def test_layer_of_another_image_waits_for_its_pull(self) -> None:
        """The head of the queue is assigned on any image's take and downloaded by its own."""
        budget = make(SMALL)
        assert budget.take(digest(1), 600 * KiB, 0.0)
        budget.done(digest(1), False, 0, 0.0)
        budget.settle(image("b"), [digest(1)])
        # Image a's pull assigns b's older layer first; a's own layer no longer fits.
        assert not budget.take(digest(2), 600 * KiB, 0.0)
        assert budget.take(digest(1), 600 * KiB, 0.0)


class TestCatalogChanges:
    def test_settle_drops_replaced_layer(self) -> None:
        """A layer no longer in the image leaves catalog_bytes, layers and oldest_age."""
        budget = make(SMALL)
        budget.take(digest(1), 100 * KiB, 0.0)
        budget.take(digest(2), 200 * KiB, 0.0)
        budget.settle(image("a"), [digest(1), digest(2)])
        budget.take(digest(1), 100 * KiB, 100.0)
        budget.take(digest(3), 300 * KiB, 100.0)
        assert budget.catalog_bytes == 600 * KiB
        budget.settle(image("a"), [digest(1), digest(3)])
        assert (budget.catalog_bytes, budget.layers) == (400 * KiB, 2)

    def test_settle_updates_oldest_age(self) -> None:
        """Dropping the stalest layer makes oldest_age report the next stalest."""
        budget = make(SMALL)
        budget.take(digest(1), 100 * KiB, 0.0)  # granted but never finished: stays stale
        budget.take(digest(2), 100 * KiB, 50.0)
        budget.settle(image("a"), [digest(1)])
        budget.settle(image("b"), [digest(2)])
        assert budget.oldest_age(200.0) == 200.0
        budget.settle(image("a"), [])
        assert budget.oldest_age(200.0) == 150.0

    def test_shared_layer_survives_one_image(self) -> None:
        """A layer still referenced by another image is kept."""
        budget = make(SMALL)
        budget.take(digest(1), 100 * KiB, 0.0)
        budget.settle(image("a"), [digest(1)])
        budget.settle(image("b"), [digest(1)])
        budget.settle(image("a"), [])
        assert budget.layers == 1

    def test_forget_except_drops_images_and_their_layers(self) -> None:
        """Forgetting an image drops its own layers, keeps shared ones, and drops layers
        seen only through take."""
        budget = make(SMALL)
        for n in (1, 2, 3, 4):
            assert budget.take(digest(n), 10 * KiB, 0.0)
            budget.done(digest(n), True, 10 * KiB, 0.0)
        budget.settle(image("a"), [digest(1), digest(2)])
        budget.settle(image("b"), [digest(2), digest(3)])
        budget.forget_except([image("a")])
        assert (budget.layers, budget.catalog_bytes) == (2, 20 * KiB)
        budget.forget_except([])
        assert (budget.layers, budget.catalog_bytes, budget.oldest_age(0.0)) == (0, 0, None)

    def test_taken_before_settled_is_referenced(self) -> None:
        """A layer first seen through take belongs to the image that settles it."""
        budget = make(SMALL)
        budget.take(digest(1), 10 * KiB, 0.0)
        budget.settle(image("a"), [digest(1)])
        budget.forget_except([image("a")])
        assert budget.layers == 1

    def test_dropped_assignment_is_refunded(self) -> None:
        """When a layer assigned to an image is dropped, its bytes go back to the bucket."""
        budget = make(SMALL)
        assert budget.take(digest(1), 600 * KiB, 0.0)
        budget.done(digest(1), False, 0, 0.0)
        budget.settle(image("b"), [digest(1)])
        assert not budget.take(digest(2), 600 * KiB, 0.0)  # b's layer was assigned instead
        budget.settle(image("a"), [digest(2)])
        budget.forget_except([image("a")])
        assert budget.take(digest(2), 600 * KiB, 0.0)

    def test_drop_during_download_keeps_its_cost(self) -> None:
        """A layer dropped while it downloads stays counted; its late `done` changes nothing."""
        budget = make(SMALL)
        assert budget.take(digest(1), MiB, 0.0)
        budget.settle(image("a"), [digest(1)])
        budget.settle(image("a"), [])
        budget.done(digest(1), False, 0, 0.0)
        assert budget.verified_bytes == 0
        assert not budget.take(digest(2), MiB, 1.0)


class TestHold:
    def test_unclaimed_assignment_is_given_back(self) -> None:
        """An assignment whose image never pulls is given back after `hold`, freeing its bytes
        for the next layer."""
        budget = make(SMALL, hold=30.0)
        assert budget.take(digest(1), 600 * KiB, 0.0)
        budget.done(digest(1), True, 600 * KiB, 0.0)
        budget.settle(image("b"), [digest(1)])
        # Image a's pull at t=40 assigns b's layer too (the bucket is full again).
        assert budget.take(digest(2), KiB, 40.0)
        budget.done(digest(2), True, KiB, 40.0)
        # Within hold, c's large layer does not fit beside b's assignment ...
        assert not budget.take(digest(3), 1000 * KiB, 69.0)
        # ... after it, b's bytes are back and c's layer fits.
        assert budget.take(digest(3), 1000 * KiB, 71.0)
        assert budget.layers == 3

    def test_orphan_assignment_is_dropped(self) -> None:
        """A layer seen only through take, assigned and never taken again within `hold`, is
        dropped rather than assigned forever."""
        budget = make(SMALL, hold=30.0)
        assert budget.take(digest(1), 10 * KiB, 0.0)
        budget.done(digest(1), False, 0, 0.0)
        budget.take(digest(2), 10 * KiB, 10.0)  # assigns the orphan
        budget.settle(image("a"), [digest(2)])
        budget.take(digest(2), 10 * KiB, 50.0)
        assert (budget.layers, budget.catalog_bytes) == (1, 10 * KiB)


class TestWindow:
    """A 50 MiB layer in a 100 MiB budget: the burst is 50 MiB, refilled at 50 MiB per hour."""

    BUDGET = 100 * MiB
    SMALL: ClassVar[list[str]] = [digest(n) for n in range(100, 220)]

    @pytest.fixture
    def downloads(self) -> list[tuple[float, int]]:
        return []

    def pull(
        self,
        budget: BlobBudget,
        downloads: list[tuple[float, int]],
        layers: list[Layer],
        now: float,
    ) -> None:
        """Take and download what is granted, checking the hour that ends now."""
        for d, size in layers:
            if budget.take(d, size, now):
                downloads.append((now, size))
                budget.done(d, True, size, now)
        assert sum(n for t, n in downloads if now - HOUR <= t <= now) <= self.BUDGET

    def test_pending_assignment_counts_until_downloaded(
        self, downloads: list[tuple[float, int]]
    ) -> None:
        """An assignment waiting for a rare pull keeps its bytes reserved, so the hour in which
        it is finally downloaded stays within bytes_per_hour."""
        budget = make(self.BUDGET, hold=7200.0)
        small = [(d, MiB) for d in self.SMALL]
        big = [(digest(1), 50 * MiB)]
        self.pull(budget, downloads, big, 0.0)  # seen; the bucket is not yet full enough
        budget.settle(image("big"), [digest(1)])
        self.pull(budget, downloads, small, 3500.0)  # assigns the big layer, seen first
        for step in range(59):
            self.pull(budget, downloads, small, 7100.0 + step * T)
        self.pull(budget, downloads, big, 10600.0)  # its image's next pull, within hold
        assert downloads[-1] == (10600.0, 50 * MiB)

    def test_orphan_is_released_once(self, downloads: list[tuple[float, int]]) -> None:
        """Dropping an orphan assignment returns its bytes once, so a reservation made beside
        it still counts."""
        budget = make(self.BUDGET, hold=3600.0)
        small = [(d, MiB) for d in self.SMALL]
        orphan, big = [(digest(1), 50 * MiB)], [(digest(2), 50 * MiB)]
        self.pull(budget, downloads, orphan, 0.0)  # seen by a pull that never settles
        self.pull(budget, downloads, big, 0.0)
        budget.settle(image("big"), [digest(2)])
        self.pull(budget, downloads, small, 3500.0)  # assigns the orphan
        self.pull(budget, downloads, small, 7100.0)  # assigns the big layer
        for step in range(58):  # the orphan is dropped at the first of these
            self.pull(budget, downloads, small, 7110.0 + step * T)
        self.pull(budget, downloads, big, 10650.0)  # its image's next pull, within hold
        assert downloads[-1] == (10650.0, 50 * MiB)
        assert budget.layers == len(self.SMALL) + 1


# --- property: the hourly window holds for any sequence of operations -------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(0, 7), st.integers(1, 40 * MiB)),
        st.tuples(st.just("done"), st.integers(0, 7), st.integers(0, 3)),
        st.tuples(st.just("wait"), st.integers(0, 4000), st.just(0)),
        st.tuples(st.just("settle"), st.integers(0, 2), st.integers(0, 255)),
        st.tuples(st.just("forget"), st.integers(0, 2), st.just(0)),
    ),
    max_size=120,
)


class TestProperty:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        ops=operations,
        bytes_per_hour=st.integers(MiB, 100 * MiB),
        hold=st.sampled_from([30.0, 7200.0]),
    )
    def test_window_never_exceeds_budget(
        self, ops: list[tuple[str, int, int]], bytes_per_hour: int, hold: float
    ) -> None:
        """For any takes, failures, waits and catalog changes, the bytes actually downloaded in
        any 3600 s never exceed bytes_per_hour."""
        budget = make(bytes_per_hour, hold=hold)
        now = 0.0
        sizes: dict[int, int] = {}
        inflight: dict[int, tuple[float, int]] = {}
        downloads: list[tuple[float, int]] = []  # (start, bytes received)
        for kind, a, b in ops:
            if kind == "take":
                size = sizes.setdefault(a, b)
                if budget.take(digest(a), size, now):
                    if a in inflight:  # dropped while in flight, and seen anew
                        downloads.append(inflight[a])
                    inflight[a] = (now, size)
            elif kind == "done" and a in inflight:
                start, size = inflight.pop(a)
                received = [0, size // 3, size, size][b]
                downloads.append((start, received))
                budget.done(digest(a), b == 3, received, now)
            elif kind == "wait":
                now += a
            elif kind == "settle":
                budget.settle(image(str(a)), [digest(n) for n in range(8) if b >> n & 1])
            elif kind == "forget":
                budget.forget_except([image(str(n)) for n in range(a)])
        downloads += inflight.values()  # unfinished downloads count in full
        for end, _ in downloads:
            window = sum(size for start, size in downloads if end - HOUR <= start <= end)
            assert window <= bytes_per_hour
