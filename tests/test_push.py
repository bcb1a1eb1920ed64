"""The registry write primitives against the real registry: pushes counted, deletes, tag reads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canary.config import Environment, Image
from canary.registry.client import RegistryClient
from canary.registry.push import (
    MAX_TAG_PAGES,
    PushError,
    SyntheticImage,
    delete_blob,
    delete_manifest,
    existing,
    list_tags,
    manifest_digest,
    push,
    push_manifest,
)
from canary.results import Fetch, Outcome, WriteOperation, WriteOutcome
from canary.seed import synthesize
from canary.testbed import LocalRegistry

pytestmark = pytest.mark.registry

REPOSITORY = "push/app"
OK = WriteOutcome.OK


def client_for(url: str) -> RegistryClient:
    return RegistryClient(Environment(name="local", url=url))


def image(tag: str) -> SyntheticImage:
    return synthesize(Image(repository=REPOSITORY, tag=tag), layers=2, layer_size=2048)


class TestPush:
    async def test_every_write_is_counted(self, registry: LocalRegistry) -> None:
        """A push counts one upload per blob and one put per manifest; present blobs are not
        uploaded again, so a second push of the same image counts only its manifest put."""
        pushed = image("v1")
        writes: list[tuple[WriteOperation, WriteOutcome]] = []
        async with client_for(registry.url) as client:
            await push(client, pushed, writes)
            assert writes == [(WriteOperation.BLOB_UPLOAD, OK)] * 3 + [
                (WriteOperation.MANIFEST_PUT, OK)
            ]
            writes.clear()
            await push(client, pushed, writes)
            assert writes == [(WriteOperation.MANIFEST_PUT, OK)]
            assert await manifest_digest(client, REPOSITORY, "v1") == pushed.digest

    async def test_multi_platform_counts_each_manifest(self, registry: LocalRegistry) -> None:
        """An index push counts the platform manifests put by digest and the index put by tag."""
        multi = synthesize(
            Image(repository=REPOSITORY, tag="multi", platforms=["linux/amd64", "linux/arm64"]),
            layers=1,
            layer_size=512,
        )
        writes: list[tuple[WriteOperation, WriteOutcome]] = []
        async with client_for(registry.url) as client:
            await push(client, multi, writes)
        assert writes.count((WriteOperation.BLOB_UPLOAD, OK)) == 4
        assert writes.count((WriteOperation.MANIFEST_PUT, OK)) == 3

    async def test_refused_manifest_is_counted_failed_with_the_registry_outcome(
        self, registry: LocalRegistry
    ) -> None:
        """A manifest whose blobs were never pushed is refused: a failed put in the count and a
        PushError carrying MANIFEST_BLOB_UNKNOWN with evidence, in seed's message format."""
        orphan = image("orphan")
        writes: list[tuple[WriteOperation, WriteOutcome]] = []
        async with client_for(registry.url) as client:
            with pytest.raises(PushError) as caught:
                await push_manifest(client, REPOSITORY, "orphan", orphan.top, writes)
        assert writes == [(WriteOperation.MANIFEST_PUT, WriteOutcome.FAILED)]
        assert str(caught.value) == "putting manifest orphan: the registry answered HTTP 400"
        fetch = caught.value.fetch
        assert fetch.outcome is Outcome.MANIFEST_BLOB_UNKNOWN
        assert fetch.evidence is not None
        assert fetch.evidence.code == "MANIFEST_BLOB_UNKNOWN"
        assert fetch.evidence.url == f"{registry.url}/v2/{REPOSITORY}/manifests/orphan"


class TestDelete:
    async def test_manifest_delete_removes_its_tags(self, registry: LocalRegistry) -> None:
        """Deleting a manifest by digest answers OK and takes every tag that pointed at it."""
        pushed = image("v1")
        async with client_for(registry.url) as client:
            await push(client, pushed)
            await push_manifest(client, REPOSITORY, "also", pushed.top)
            await push(client, image("other"))
            assert sorted(await list_tags(client, REPOSITORY)) == ["also", "other", "v1"]
            assert await delete_manifest(client, REPOSITORY, pushed.digest) is OK
            assert await list_tags(client, REPOSITORY) == ["other"]
            assert await manifest_digest(client, REPOSITORY, "v1") is None

    async def test_blob_delete_unlinks_it_from_the_repository(
        self, registry: LocalRegistry
    ) -> None:
        """Deleting a blob answers OK and the repository no longer serves it."""
        pushed = image("v1")
        layer = pushed.blobs[1].digest
        async with client_for(registry.url) as client:
            await push(client, pushed)
            assert await existing(client, REPOSITORY, "blobs", layer) == layer
            assert await delete_blob(client, REPOSITORY, layer) is OK
            assert await existing(client, REPOSITORY, "blobs", layer) is None

    async def test_unknown_digest_is_failed_with_evidence(self, registry: LocalRegistry) -> None:
        """A delete of something the repository lacks is FAILED, its answer kept as evidence."""
        missing = "sha256:" + "0" * 64
        problems: list[Fetch] = []
        async with client_for(registry.url) as client:
            await push(client, image("v1"))
            assert await delete_manifest(client, REPOSITORY, missing, problems) is (
                WriteOutcome.FAILED
            )
            assert await delete_blob(client, REPOSITORY, missing, problems) is WriteOutcome.FAILED
        assert [(p.status, p.evidence.code if p.evidence else None) for p in problems] == [
            (404, "MANIFEST_UNKNOWN"),
            (404, "BLOB_UNKNOWN"),
        ]

    async def test_deletes_turned_off_are_unsupported(
        self, no_delete_registry: LocalRegistry
    ) -> None:
        """With deletes off both deletes are UNSUPPORTED (405 UNSUPPORTED) and the tag stays."""
        pushed = image("v1")
        problems: list[Fetch] = []
        async with client_for(no_delete_registry.url) as client:
            await push(client, pushed)
            outcomes = [
                await delete_manifest(client, REPOSITORY, pushed.digest, problems),
                await delete_blob(client, REPOSITORY, pushed.blobs[0].digest, problems),
            ]
            assert outcomes == [WriteOutcome.UNSUPPORTED] * 2
            assert await list_tags(client, REPOSITORY) == ["v1"]
        assert [(p.status, p.evidence.code if p.evidence else None) for p in problems] == [
            (405, "UNSUPPORTED")
        ] * 2

    async def test_stopped_registry_is_failed_not_raised(self, registry: LocalRegistry) -> None:
        """A delete that gets no answer at all is FAILED with a connection_error as evidence."""
        problems: list[Fetch] = []
        async with client_for(registry.url) as client:
            await push(client, image("v1"))
            registry.stop()
            outcome = await delete_manifest(client, REPOSITORY, image("v1").digest, problems)
        assert outcome is WriteOutcome.FAILED
        assert [p.outcome for p in problems] == [Outcome.CONNECTION_ERROR]


class TestTagReads:
    async def test_list_and_resolve(self, registry: LocalRegistry) -> None:
        """Tags list in full; each resolves to the digest pushed under it; unknown is None/[]."""
        async with client_for(registry.url) as client:
            pushed = {tag: image(tag) for tag in ("a", "b", "c")}
            for synthetic in pushed.values():
                await push(client, synthetic)
            assert sorted(await list_tags(client, REPOSITORY)) == ["a", "b", "c"]
            # distribution 2.8 answers the whole list whatever `n` says; the result is the same.
            assert sorted(await list_tags(client, REPOSITORY, page=1)) == ["a", "b", "c"]
            for tag, synthetic in pushed.items():
                assert await manifest_digest(client, REPOSITORY, tag) == synthetic.digest
            assert await manifest_digest(client, REPOSITORY, "nope") is None
            assert await manifest_digest(client, "push/nothing", "a") is None
            assert await list_tags(client, "push/nothing") == []


PAGED_TAGS = [f"t{i}" for i in range(7)]


@pytest.fixture
async def paging_registry() -> AsyncIterator[tuple[TestServer, list[str]]]:
    """A loopback stand-in for a registry that pages tag lists as the distribution spec says
    (`n`, `last`, `Link: <...>; rel="next"`); repository `endless` always has a next page."""
    queries: list[str] = []

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({})

    async def tags(request: web.Request) -> web.Response:
        queries.append(request.query_string)
        name = request.match_info["name"]
        n = int(request.query.get("n", "1000"))
        if name == "endless":
            page = [f"e{len(queries)}"]
            link = f'</v2/endless/tags/list?n={n}&last={page[-1]}>; rel="next"'
            return web.json_response({"name": name, "tags": page}, headers={"Link": link})
        last = request.query.get("last")
        start = PAGED_TAGS.index(last) + 1 if last else 0
        page = PAGED_TAGS[start : start + n]
        headers = {}
        if start + n < len(PAGED_TAGS):
            headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={page[-1]}>; rel="next"'
        return web.json_response({"name": name, "tags": page}, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/{name}/tags/list", tags)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server, queries
    finally:
        await server.close()


class TestTagPages:
    async def test_follows_next_links(self, paging_registry: tuple[TestServer, list[str]]) -> None:
        """A tag list of 7 in pages of 2 is read in full over 4 requests, each after the last."""
        server, queries = paging_registry
        async with client_for(f"http://127.0.0.1:{server.port}") as client:
            assert await list_tags(client, "paged", page=2) == PAGED_TAGS
        assert queries == ["n=2", "n=2&last=t1", "n=2&last=t3", "n=2&last=t5"]

    async def test_stops_after_the_page_limit(
        self, paging_registry: tuple[TestServer, list[str]]
    ) -> None:
        """A registry that always offers another page is read for MAX_TAG_PAGES pages only."""
        server, queries = paging_registry
        async with client_for(f"http://127.0.0.1:{server.port}") as client:
            tags = await list_tags(client, "endless", page=1)
        assert len(tags) == len(queries) == MAX_TAG_PAGES
