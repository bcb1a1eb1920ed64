"""The byte budget of `blob_check: budget`: which layers to download in full, and when."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from canary.config import Budget

HOUR = 3600.0
ImageKey = tuple[str, str, str]


class _State(Enum):
    QUEUED = "queued"  # waits in the rotation (or, too large to grant, never leaves it)
    ASSIGNED = "assigned"  # granted, waiting for a pull of an image that has it
    TAKEN = "taken"  # being downloaded; `done` says how it went


@dataclass(slots=True)
class _Grant:
    """Bytes downloaded from `time` on; counted in the window while `live`."""

    time: float
    size: int
    live: bool = True


@dataclass(slots=True)
class _Layer:
    size: int
    stamp: float  # last full verification, or first sighting while never verified
    verified: bool = False
    state: _State = _State.QUEUED
    ticket: int = 0  # names the layer's one valid queue or hold entry
    grant: _Grant | None = None


class BlobBudget:
    """One environment's rotation of full verifications, kept within its bytes per hour."""

    def __init__(self, budget: Budget, hold: float, now: float) -> None:
        self.bytes_per_hour: int = budget.bytes_per_hour
        self.full_verify_within: float = budget.full_verify_within
        self.hold = hold
        self.verified_bytes = 0
        self._largest = 0  # largest grantable layer seen so far
        self._tokens = self.burst
        self._refilled = now
        self._layers: dict[str, _Layer] = {}
        self._catalog = 0
        self._too_large: dict[str, int] = {}
        self._queue: list[tuple[bool, float, str, int]] = []
        self._held: deque[tuple[float, str, int]] = deque()
        # Assigned bytes count against every window until taken or given back: they may be
        # downloaded at any time within `hold`, and the window bounds bytes downloaded.
        self._pending = 0
        self._log: deque[_Grant] = deque()
        self._logged = 0
        self._images: dict[ImageKey, frozenset[str]] = {}
        self._refs: dict[str, int] = {}
        self._tickets = itertools.count(1)

    def reconfigure(self, budget: Budget, hold: float) -> None:
        """New settings; which layers were verified, and when, is kept."""
        self.bytes_per_hour = budget.bytes_per_hour
        self.full_verify_within = budget.full_verify_within
        self.hold = hold
        bph = self.bytes_per_hour
        self._too_large = {d: x.size for d, x in self._layers.items() if x.size > bph}
        self._largest = max((x.size for x in self._layers.values() if x.size <= bph), default=0)
        self._tokens = min(self._tokens, self.burst)
        self._queue = []
        for digest, layer in self._layers.items():
            if layer.state is _State.QUEUED:
                self._enqueue(digest, layer)

    @property
    def burst(self) -> float:
        return max(float(self._largest), self.bytes_per_hour / 60)

    @property
    def rate(self) -> float:
        """Refill of the bucket, bytes per second."""
        return max(0.0, (self.bytes_per_hour - self.burst) / HOUR)

    @property
    def catalog_bytes(self) -> int:
        return self._catalog

    @property
    def layers(self) -> int:
        return len(self._layers)

    def take(self, digest: str, size: int, now: float) -> bool:
        """True when this pull should download `digest` in full (and then call `done`)."""
        layer = self._layers.get(digest)
        if layer is None:
            # A digest names its content, so the first size given is the size.
            layer = self._layers[digest] = _Layer(size=size, stamp=now)
            self._catalog += size
            if size > self.bytes_per_hour:
                self._too_large[digest] = size
            else:
                self._largest = max(self._largest, size)
            self._enqueue(digest, layer)
        self._advance(now)
        self._assign(now)
        if layer.state is not _State.ASSIGNED:
            return False
        layer.state = _State.TAKEN
        self._pending -= layer.size
        layer.grant = _Grant(now, layer.size)
        self._log.append(layer.grant)
        self._logged += layer.size
        return True

    def done(self, digest: str, verified: bool, received: int, now: float) -> None:
        """Record how a download that `take` granted ended."""
        layer = self._layers.get(digest)
        if layer is None or layer.grant is None:
            return  # dropped while in flight (its bytes stay counted), or not taken
        self._advance(now)
        unused = min(max(layer.size - received, 0), layer.size)
        if unused:
            self._refund(unused)
            layer.grant.size -= unused
            if layer.grant.live:
                self._logged -= unused
        layer.grant = None
        if verified:
            layer.stamp = now
            layer.verified = True
            self.verified_bytes += received
        self._enqueue(digest, layer)

    def settle(self, image: ImageKey, digests: Collection[str]) -> None:
        """Set the layers of `image` as of its latest pull; drop layers it alone had."""
        new = frozenset(digests)
        old = self._images.get(image, frozenset())
        self._images[image] = new
        for digest in new - old:
            self._refs[digest] = self._refs.get(digest, 0) + 1
        for digest in old - new:
            self._refs[digest] -= 1
            if not self._refs[digest]:
                del self._refs[digest]
                self._drop(digest)

    def forget_except(self, images: Collection[ImageKey]) -> None:
        """Drop images not listed, then every layer no image references."""
        keep = set(images)
        for image in [image for image in self._images if image not in keep]:
            self.settle(image, ())
            del self._images[image]
        for digest, layer in list(self._layers.items()):
            # A download in flight still has to be accounted for by `done`.
            if digest not in self._refs and layer.state is not _State.TAKEN:
                self._drop(digest)

    def oldest_age(self, now: float) -> float | None:
        """How long ago the least recently verified layer was verified (or first seen)."""
        oldest = min((layer.stamp for layer in self._layers.values()), default=None)
        return None if oldest is None else now - oldest

    def shortfall(self, cycle: float) -> Shortfall | None:
        """Why the budget cannot verify every measured layer in time, or None when it can."""
        return shortfall(
            self.layers,
            self._catalog,
            self._largest,
            self._too_large,
            self.bytes_per_hour,
            self.full_verify_within,
            cycle,
        )

    def _advance(self, now: float) -> None:
        elapsed = now - self._refilled
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._refilled = now
        while self._log and self._log[0].time < now - HOUR:
            grant = self._log.popleft()
            grant.live = False
            self._logged -= grant.size
        while self._held and now - self._held[0][0] > self.hold:
            _, digest, ticket = self._held.popleft()
            layer = self._layers.get(digest)
            if layer is None or layer.ticket != ticket or layer.state is not _State.ASSIGNED:
                continue
            if digest not in self._refs:
                # Seen by a take but settled by no image, and not taken since: an orphan that
                # would otherwise be assigned and given back forever.
                self._drop(digest)
                continue
            self._release(layer)
            self._enqueue(digest, layer)

    def _assign(self, now: float) -> None:
        while self._queue:
            _, _, digest, ticket = self._queue[0]
            layer = self._layers.get(digest)
            if layer is None or layer.ticket != ticket or layer.state is not _State.QUEUED:
                heapq.heappop(self._queue)
                continue
            size = layer.size
            if size > self._tokens or self._logged + self._pending + size > self.bytes_per_hour:
                return  # the head waits: skipping it for smaller layers would starve it
            heapq.heappop(self._queue)
            self._tokens -= size
            self._pending += size
            layer.state = _State.ASSIGNED
            layer.ticket = next(self._tickets)
            self._held.append((now, digest, layer.ticket))

    def _enqueue(self, digest: str, layer: _Layer) -> None:
        layer.state = _State.QUEUED
        layer.ticket = next(self._tickets)
        if layer.size > self.bytes_per_hour:
            return
        heapq.heappush(self._queue, (layer.verified, layer.stamp, digest, layer.ticket))
        if len(self._queue) > 2 * len(self._layers) + 1024:
            self._queue = [
                entry
                for entry in self._queue
                if (found := self._layers.get(entry[2])) is not None and found.ticket == entry[3]
            ]
            heapq.heapify(self._queue)

    def _refund(self, size: int) -> None:
        self._tokens = min(self.burst, self._tokens + size)

    def _release(self, layer: _Layer) -> None:
        """Give back an assignment that was not taken."""
        self._pending -= layer.size
        self._refund(layer.size)

    def _drop(self, digest: str) -> None:
        layer = self._layers.pop(digest, None)
        if layer is None:
            return
        self._catalog -= layer.size
        self._too_large.pop(digest, None)
        if layer.state is _State.ASSIGNED:
            self._release(layer)
        if layer.size == self._largest:
            # The burst allowance follows the largest layer still in the catalog, or one large
            # layer gone for good would cut the steady rate for ever.
            self._largest = max(
                (
                    other.size
                    for other in self._layers.values()
                    if other.size <= self.bytes_per_hour
                ),
                default=0,
            )
            self._tokens = min(self._tokens, self.burst)
        # A TAKEN layer is being downloaded: its grant stays in the window.


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a budget cannot keep up, and which of its keys to change."""

    key: str  # bytes_per_hour or full_verify_within
    reason: str


def shortfall(
    layers: int,
    catalog_bytes: int,
    largest: int,
    too_large: Mapping[str, int],
    bytes_per_hour: int,
    full_verify_within: float,
    cycle: float,
) -> Shortfall | None:
    """The verdict on a budget for measured layers (`largest` of those it can grant, and the
    `too_large` ones by digest), for the daemon and `check-config --measure` alike."""
    bph, fvw = bytes_per_hour, full_verify_within
    if too_large:
        size, digest = max((size, digest) for digest, size in too_large.items())
        what = f"layer {digest} of" if len(too_large) == 1 else f"{len(too_large)} layers, up to"
        return Shortfall(
            "bytes_per_hour",
            f"{what} {format_bytes(size)} larger than bytes_per_hour ({format_bytes(bph)}) "
            "can never be downloaded in full",
        )
    if not catalog_bytes:
        return None
    required = required_bytes_per_hour(catalog_bytes, largest, fvw, cycle)
    if required is None:
        return Shortfall(
            "full_verify_within",
            f"full verification within {format_duration(fvw)} is impossible when an image is "
            f"pulled only every {format_duration(cycle)}",
        )
    if required <= bph:
        return None
    return Shortfall(
        "bytes_per_hour",
        f"full verification of {layers} layers ({format_bytes(catalog_bytes)}) within "
        f"{format_duration(fvw)} needs bytes_per_hour of at least {format_bytes(required)}; "
        f"it is {format_bytes(bph)}",
    )


def required_bytes_per_hour(
    catalog_bytes: int, largest: int, full_verify_within: float, cycle: float
) -> int | None:
    """The least bytes_per_hour that verifies `catalog_bytes` in full within the limit, or None
    when no budget can (an assigned layer waits up to `cycle` for its image's next pull)."""
    if cycle >= full_verify_within:
        return None
    # The bucket refills at (bph - burst) / 3600 with burst = max(largest, bph / 60).
    needed = catalog_bytes * HOUR / (full_verify_within - cycle)
    return math.ceil(max(needed + largest, needed * 60 / 59))


def format_bytes(n: int) -> str:
    """`512 B`, `1.5 GiB`: a size for people."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if round(value, 1) < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} TiB"


def format_duration(seconds: float) -> str:
    """`24h`, `90m`, `45s`: a duration in the config's own notation."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
