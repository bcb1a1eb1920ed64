"""Writes to a registry (push, delete) and the tag reads that go with them, each write countable.

Exceptions raised here:

    PushError       the registry refused a write, or answered it in a way a push cannot go on
                    from; carries the Fetch its answer maps to, with evidence
    RegistryError   (from the client) a request that got no usable response at all

Deletes never raise: they answer with a WriteOutcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from canary.registry.auth import pull_scope
from canary.registry.client import RegistryClient, error_fetch, next_page
from canary.registry.errors import RegistryError, Subject
from canary.registry.media import ACCEPT, digest_of
from canary.registry.response import Response
from canary.results import Fetch, Outcome, WriteOperation, WriteOutcome

Writes = list[tuple[WriteOperation, WriteOutcome]]

TAGS_PAGE = 1000
MAX_TAG_PAGES = 100
MAX_TAGS_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes to push, with the media type their descriptor names."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


@dataclass(frozen=True, slots=True)
class SyntheticImage:
    """Everything to push for one tag: blobs, platform manifests, and the tagged manifest."""

    repository: str
    tag: str
    published: datetime
    blobs: tuple[Blob, ...]
    platform_manifests: tuple[Blob, ...]
    top: Blob

    @property
    def digest(self) -> str:
        return self.top.digest


class PushError(Exception):
    """A write the registry refused or answered unusably; `fetch` holds the outcome it maps to."""

    def __init__(self, message: str, fetch: Fetch) -> None:
        self.fetch = fetch
        super().__init__(message)


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def delete_scope(repository: str) -> str:
    # Token registries grant DELETE only to a token that names the `delete` action.
    return f"repository:{repository}:pull,push,delete"


async def _check(
    response: Response,
    expected: int,
    what: str,
    subject: Subject = "other",
    method: str = "PUT",
) -> None:
    if response.raw.status != expected:
        fetch = await error_fetch(response, subject, method)
        raise PushError(f"{what}: the registry answered HTTP {response.raw.status}", fetch)


async def existing(client: RegistryClient, repository: str, kind: str, ref: str) -> str | None:
    """The digest the registry has under `ref` (`kind` is manifests or blobs), or None when it
    has nothing there; asked with the push scope, so a pusher needs one token."""
    subject: Subject = "manifest" if kind == "manifests" else "blob"
    async with client.open(
        "HEAD",
        f"/v2/{repository}/{kind}/{ref}",
        scope=push_scope(repository),
        subject=subject,
        headers={"Accept": ACCEPT},
    ) as response:
        if response.raw.status == 404:
            return None
        await _check(response, 200, f"looking up {ref}", subject, "HEAD")
        digest = response.raw.headers.get("Docker-Content-Digest")
    if digest:
        return digest
    if kind == "blobs":
        return ref  # a blob is asked for by its digest
    # A registry that leaves the header out: the body's digest is the manifest's digest.
    return (await client.get_manifest(repository, ref)).digest


def _counted(writes: Writes | None, operation: WriteOperation, outcome: WriteOutcome) -> None:
    if writes is not None:
        writes.append((operation, outcome))


async def push_blob(
    client: RegistryClient, repository: str, blob: Blob, writes: Writes | None = None
) -> bool:
    """Upload `blob` unless the repository has it; True when it was uploaded.

    An upload (POST then PUT) is one BLOB_UPLOAD in `writes`, failed if either request fails.
    """
    if await existing(client, repository, "blobs", blob.digest):
        return False
    try:
        await _upload(client, repository, blob)
    except BaseException:
        _counted(writes, WriteOperation.BLOB_UPLOAD, WriteOutcome.FAILED)
        raise
    _counted(writes, WriteOperation.BLOB_UPLOAD, WriteOutcome.OK)
    return True


async def _upload(client: RegistryClient, repository: str, blob: Blob) -> None:
    scope = push_scope(repository)
    async with client.open(
        "POST", f"/v2/{repository}/blobs/uploads/", scope=scope, subject="other"
    ) as response:
        await _check(
            response,
            202,
            f"starting the upload of {blob.digest}",
            method="POST",
        )
        location = response.raw.headers.get("Location", "")
        if not location:
            problem = "the registry gave no upload location"
            raise PushError(problem, response.fail(Outcome.INVALID_RESPONSE, problem))
    separator = "&" if "?" in location else "?"
    async with client.open(
        "PUT",
        f"{location}{separator}digest={blob.digest}",
        scope=scope,
        subject="other",
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    ) as response:
        await _check(response, 201, f"uploading {blob.digest}")


async def push_manifest(
    client: RegistryClient, repository: str, ref: str, blob: Blob, writes: Writes | None = None
) -> None:
    """Put a manifest under `ref` (a tag or its digest): one MANIFEST_PUT in `writes`."""
    try:
        async with client.open(
            "PUT",
            f"/v2/{repository}/manifests/{ref}",
            scope=push_scope(repository),
            subject="manifest",
            data=blob.data,
            headers={"Content-Type": blob.media_type},
        ) as response:
            await _check(
                response,
                201,
                f"putting manifest {ref}",
                "manifest",
            )
    except BaseException:
        _counted(writes, WriteOperation.MANIFEST_PUT, WriteOutcome.FAILED)
        raise
    _counted(writes, WriteOperation.MANIFEST_PUT, WriteOutcome.OK)


async def push(client: RegistryClient, image: SyntheticImage, writes: Writes | None = None) -> None:
    """Push blobs, then platform manifests by digest, then the tag; every write request is
    appended to `writes` with how it ended. Raises PushError or RegistryError."""
    for blob in image.blobs:
        await push_blob(client, image.repository, blob, writes)
    for manifest in image.platform_manifests:
        await push_manifest(client, image.repository, manifest.digest, manifest, writes)
    await push_manifest(client, image.repository, image.tag, image.top, writes)


async def _delete(
    client: RegistryClient,
    repository: str,
    kind: str,
    digest: str,
    problems: list[Fetch] | None,
    writes: Writes | None,
) -> WriteOutcome:
    operation = (
        WriteOperation.MANIFEST_DELETE if kind == "manifests" else WriteOperation.BLOB_DELETE
    )
    try:
        outcome = await _send_delete(client, repository, kind, digest, problems)
    except BaseException:
        # Cut off (a round's timeout): the request went out and may have changed something.
        _counted(writes, operation, WriteOutcome.FAILED)
        raise
    _counted(writes, operation, outcome)
    return outcome


async def _send_delete(
    client: RegistryClient,
    repository: str,
    kind: str,
    digest: str,
    problems: list[Fetch] | None,
) -> WriteOutcome:
    subject: Subject = "manifest" if kind == "manifests" else "blob"
    try:
        async with client.open(
            "DELETE",
            f"/v2/{repository}/{kind}/{digest}",
            scope=delete_scope(repository),
            subject=subject,
        ) as response:
            if 200 <= response.raw.status < 300:  # the spec says 202; some registries 200/204
                return WriteOutcome.OK
            fetch = await error_fetch(response, subject, "DELETE")
    except RegistryError as exc:
        fetch = exc.fetch
    if problems is not None:
        problems.append(fetch)
    code = fetch.evidence.code if fetch.evidence else None
    if fetch.status == 405 or code == "UNSUPPORTED":
        return WriteOutcome.UNSUPPORTED
    return WriteOutcome.FAILED


async def delete_manifest(
    client: RegistryClient,
    repository: str,
    digest: str,
    problems: list[Fetch] | None = None,
    writes: Writes | None = None,
) -> WriteOutcome:
    """DELETE a manifest by digest; distribution removes the tags that point at it too.

    UNSUPPORTED when the registry has deletes turned off; a refusal (401, 403) is FAILED.
    The answer to anything but OK is appended to `problems`, as evidence, and the write to
    `writes`. Never raises (but for cancellation).
    """
    return await _delete(client, repository, "manifests", digest, problems, writes)


async def delete_blob(
    client: RegistryClient,
    repository: str,
    digest: str,
    problems: list[Fetch] | None = None,
    writes: Writes | None = None,
) -> WriteOutcome:
    """DELETE a blob's link from a repository, as `delete_manifest` does a manifest."""
    return await _delete(client, repository, "blobs", digest, problems, writes)


async def list_tags(client: RegistryClient, repository: str, page: int = TAGS_PAGE) -> list[str]:
    """Every tag of `repository`, following `Link: rel="next"` for at most MAX_TAG_PAGES pages
    of `page` tags; [] when the repository is unknown. Raises RegistryError."""
    tags: list[str] = []
    path: str | None = f"/v2/{repository}/tags/list?n={page}"
    for _ in range(MAX_TAG_PAGES):
        if path is None:
            break
        async with client.open(
            "GET", path, scope=pull_scope(repository), subject="other"
        ) as response:
            raw = response.raw
            if raw.status != 200:
                fetch = await error_fetch(response, "other", "GET")
                code = fetch.evidence.code if fetch.evidence else None
                if raw.status == 404 and code in (None, "NAME_UNKNOWN"):
                    return []
                raise RegistryError(fetch)
            body = await response.read_document(MAX_TAGS_BODY, "tag list")
            page_tags = _tags_of(body)
            if page_tags is None:
                raise RegistryError(
                    response.fail(Outcome.INVALID_RESPONSE, "the tag list is not {tags: [...]}")
                )
            tags += page_tags
            path = next_page(raw.headers.getall("Link", []), response.url)
    return tags


def _tags_of(body: bytes) -> list[str] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    tags = document.get("tags")
    if tags is None:  # distribution answers `null` for a repository whose tags are all gone
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return None
    return tags


async def manifest_digest(client: RegistryClient, repository: str, tag: str) -> str | None:
    """The digest `tag` points at, from a HEAD; None when the tag or repository is unknown.
    Raises RegistryError."""
    async with client.open(
        "HEAD",
        f"/v2/{repository}/manifests/{tag}",
        scope=pull_scope(repository),
        subject="manifest",
        headers={"Accept": ACCEPT},
    ) as response:
        if response.raw.status == 404:
            return None
        if response.raw.status != 200:
            raise RegistryError(await error_fetch(response, "manifest", "HEAD"))
        digest = response.raw.headers.get("Docker-Content-Digest")
    if digest:
        return digest
    # A registry that leaves the header out: the body's digest is the manifest's digest.
    return (await client.get_manifest(repository, tag)).digest
