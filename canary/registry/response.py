"""A response in hand, and what a blob's response is checked for: size, digest, range and HEAD
answers against the descriptor."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from canary.registry.errors import (
    TRANSPORT_ERRORS,
    RegistryError,
    failure,
    outcome_for_exception,
    request_id,
)
from canary.registry.media import Descriptor, Digester
from canary.results import Fetch, Hop, Outcome

RANGE_BYTES = 1024
STREAM_READ_BYTES = 1024 * 1024


@dataclass(slots=True)
class Response:
    """A response in hand: which hop answered, at which URL (after redirects)."""

    raw: aiohttp.ClientResponse
    hop: Hop
    url: str

    def ok(self, received: int) -> Fetch:
        return Fetch(
            outcome=Outcome.OK,
            hop=self.hop,
            status=self.raw.status,
            bytes=received,
            request_id=request_id(self.raw.headers),
        )

    def fail(self, outcome: Outcome, detail: str) -> Fetch:
        """A failure found in the content of a response the server called a success."""
        return failure(
            outcome,
            detail,
            hop=self.hop,
            url=self.url,
            status=self.raw.status,
            request_id_=request_id(self.raw.headers),
        )

    async def read_document(self, limit: int, what: str) -> bytes:
        """The whole body of a document of at most `limit` bytes (a manifest, a tag list);
        raises RegistryError when it is larger or the connection fails midway."""
        too_big = f"{what} larger than {limit // (1024 * 1024)} MiB"
        if (self.raw.content_length or 0) > limit:
            raise RegistryError(self.fail(Outcome.INVALID_RESPONSE, too_big))
        try:
            body = await self.read_up_to(limit + 1)
        except TRANSPORT_ERRORS as exc:
            raise RegistryError(outcome_for_exception(exc, hop=self.hop, url=self.url)) from exc
        if len(body) > limit:
            raise RegistryError(self.fail(Outcome.INVALID_RESPONSE, too_big))
        return body

    async def read_up_to(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body; fewer only when the body ends first."""
        data = b""
        while len(data) < limit:
            more = await self.raw.content.read(limit - len(data))
            if not more:
                break
            data += more
        return data


def range_header(blob: Descriptor) -> str | None:
    """The Range of a range check: the first bytes, or none of an empty blob."""
    if blob.size == 0:
        return None
    return f"bytes=0-{min(blob.size or RANGE_BYTES, RANGE_BYTES) - 1}"


def _size_problem(response: Response, blob: Descriptor) -> str | None:
    length = response.raw.content_length
    if blob.size is None or response.raw.status != 200 or length is None or length == blob.size:
        return None
    return f"Content-Length is {length}, the descriptor says {blob.size}"


def _widen_reads(raw: aiohttp.ClientResponse) -> None:
    """Let the socket hand over up to 1 MiB per read while a large body streams.

    asyncio's selector transport reads at most 256 KiB at a time (`max_size`, an attribute of
    CPython's transport, hence the guard); larger reads cut the per-chunk work by a fifth.
    """
    transport = raw.connection.transport if raw.connection is not None else None
    if transport is not None and hasattr(transport, "max_size"):
        setattr(transport, "max_size", STREAM_READ_BYTES)  # noqa: B010 - not in the typed API


async def verify_body(response: Response, blob: Descriptor, keep: list[bytes] | None) -> Fetch:
    """Stream the whole body through its digest, against the descriptor's size when it has one
    (schema 1 layers have none: their digest alone vouches for them)."""
    if response.raw.status != 200:
        return response.fail(
            Outcome.INVALID_RESPONSE, f"HTTP {response.raw.status} to a GET without Range"
        )
    problem = _size_problem(response, blob)
    if problem:
        return response.fail(Outcome.SIZE_MISMATCH, problem)
    _widen_reads(response.raw)
    digester = Digester(blob.digest)
    received = 0
    limit = blob.size
    async for chunk in response.raw.content.iter_any():
        received += len(chunk)
        if limit is not None and received > limit:
            return response.fail(Outcome.SIZE_MISMATCH, f"more than the descriptor's {limit} bytes")
        digester.update(chunk)
        if keep is not None:
            keep.append(chunk)
    if limit is not None and received != limit:
        return response.fail(
            Outcome.SIZE_MISMATCH, f"{received} bytes, the descriptor says {limit}"
        )
    if not digester.matches:
        return response.fail(Outcome.DIGEST_MISMATCH, f"content hashes to {digester.actual}")
    return response.ok(received)


async def check_range(response: Response, blob: Descriptor) -> Fetch:
    """The first bytes arrived, and the sizes the server states agree with the descriptor."""
    total = response.raw.headers.get("Content-Range", "").rpartition("/")[2]
    if blob.size is not None:
        wanted = min(blob.size, RANGE_BYTES)
        if response.raw.status == 206 and total.isdigit() and int(total) != blob.size:
            return response.fail(
                Outcome.SIZE_MISMATCH,
                f"Content-Range total is {total}, the descriptor says {blob.size}",
            )
    else:
        # No size to check against: as many bytes as the server says the blob has, up to a range.
        stated = int(total) if total.isdigit() else response.raw.content_length
        wanted = min(stated if stated is not None else RANGE_BYTES, RANGE_BYTES)
    problem = _size_problem(response, blob)
    if problem:
        return response.fail(Outcome.SIZE_MISMATCH, problem)
    data = await response.read_up_to(wanted)
    if len(data) < wanted:
        return response.fail(
            Outcome.SIZE_MISMATCH, f"{len(data)} bytes where {wanted} were asked for"
        )
    return response.ok(len(data))


def check_head(response: Response, blob: Descriptor) -> Fetch:
    """The blob exists, with the size and digest the descriptor says, when the server says them."""
    problem = _size_problem(response, blob)
    if problem:
        return response.fail(Outcome.SIZE_MISMATCH, problem)
    served = response.raw.headers.get("Docker-Content-Digest")
    if served and served != blob.digest:
        return response.fail(Outcome.DIGEST_MISMATCH, f"Docker-Content-Digest is {served}")
    return response.ok(0)
