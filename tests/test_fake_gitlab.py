"""The fake GitLab itself: the documented shapes, pagination, auth, date answers and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy
from yarl import URL

from canary.testbed import LocalRegistry, start_registry
from tests.conftest import catalog, seed_images, write_config
from tests.fake_gitlab import (
    EPOCH_TEXT,
    ZERO_TEXT,
    DateMode,
    FakeGitLab,
    FakeGitLabServer,
)

PROJECT = "group/project"
APP = "group/project/app"
GOOD = datetime(2023, 5, 1, 12, 0, tzinfo=UTC)
WRONG = datetime(2021, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
PUSHED = datetime(2023, 5, 2, 8, 30, tzinfo=UTC)
UPDATED = datetime(2023, 6, 1, 9, 0, tzinfo=UTC)
BEARER = {"Authorization": "Bearer anything"}


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def links(header: str) -> dict[str, str]:
    """A Link header's URLs by rel."""
    return {rel: url for url, rel in re.findall(r'<([^>]+)>;\s*rel="([^"]+)"', header)}


async def get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Reply:
    async with session.get(URL(url, encoded=True), headers=headers) as response:
        return Reply(response.status, response.headers, await response.text())


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll `check` against a deadline."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """`app` on a TestServer; its base URL."""
    server = TestServer(app)
    await server.start_server()
    try:
        yield f"http://{server.host}:{server.port}"
    finally:
        await server.close()


@pytest.fixture
def fake() -> FakeGitLab:
    """A project with its root repository and `app`, which has tags v1 and v2."""
    gitlab = FakeGitLab()
    gitlab.add_repository(PROJECT, PROJECT)
    gitlab.add_repository(PROJECT, APP)
    gitlab.add_tag(APP, "v1", created=GOOD, pushed=PUSHED)
    gitlab.add_tag(APP, "v2", created=GOOD, pushed=PUSHED, updated=UPDATED)
    return gitlab


@pytest.fixture
async def base(fake: FakeGitLab) -> AsyncIterator[str]:
    async with serve(fake.app()) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def rest_headers(fake: FakeGitLab) -> dict[str, str]:
    assert fake.token is not None
    return {"PRIVATE-TOKEN": fake.token}


def tag_url(base: str, fake: FakeGitLab, tag: str = "v1", project: str | None = None) -> str:
    project_id = project or str(fake.project(PROJECT).id)
    repository_id = fake.repository(APP).id
    return f"{base}/api/v4/projects/{project_id}/registry/repositories/{repository_id}/tags/{tag}"


def tags_url(base: str, path: str = APP, query: str = "") -> str:
    return f"{base}/gitlab/v1/repositories/{path}/tags/list/" + (f"?{query}" if query else "")


class TestRest:
    async def test_encoded_path_and_numeric_id(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """The project is found by URL-encoded full path and by id, with the documented shape."""
        project_id = fake.project(PROJECT).id
        by_path = await get(
            session,
            f"{base}/api/v4/projects/group%2Fproject/registry/repositories",
            rest_headers(fake),
        )
        by_id = await get(
            session,
            f"{base}/api/v4/projects/{project_id}/registry/repositories",
            rest_headers(fake),
        )
        assert by_path.status == by_id.status == 200
        assert by_path.json() == by_id.json()
        root, app = by_path.json()
        assert root == {
            "id": fake.repository(PROJECT).id,
            "name": "",
            "path": PROJECT,
            "project_id": project_id,
            "location": f"registry.example.com/{PROJECT}",
            "created_at": "2023-05-01T12:00:00.000Z",
            "cleanup_policy_started_at": None,
            "status": None,
        }
        assert (app["name"], app["path"]) == ("app", APP)

    async def test_unencoded_slash_and_unknown_project(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """An unencoded slash matches no route; an unknown project is 404 Project Not Found."""
        raw = await get(
            session,
            f"{base}/api/v4/projects/group/project/registry/repositories",
            rest_headers(fake),
        )
        assert raw.status == 404
        for project in ("group%2Fnope", "999"):
            url = f"{base}/api/v4/projects/{project}/registry/repositories"
            missing = await get(session, url, rest_headers(fake))
            assert (missing.status, missing.json()) == (404, {"message": "404 Project Not Found"})

    async def test_private_token(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """A missing or wrong PRIVATE-TOKEN is 401 Unauthorized; so is a Bearer header."""
        url = f"{base}/api/v4/projects/1/registry/repositories"
        for headers in ({}, {"PRIVATE-TOKEN": "wrong"}, {"Authorization": f"Bearer {fake.token}"}):
            refused = await get(session, url, headers)
            assert (refused.status, refused.json()) == (401, {"message": "401 Unauthorized"})
        assert (await get(session, url, rest_headers(fake))).status == 200

    async def test_pagination(self, base: str, session: aiohttp.ClientSession) -> None:
        """250 repositories come 20 a page by default, 100 at most, with GitLab's headers and
        Link, and following rel="next" yields each once, by id."""
        fake = FakeGitLab()
        fake.add_project("big/project")
        ids = [fake.add_repository("big/project", f"big/project/r{i:03}") for i in range(250)]
        async with serve(fake.app()) as url:
            listing = f"{url}/api/v4/projects/big%2Fproject/registry/repositories"
            first = await get(session, listing, rest_headers(fake))
            assert {k: first.headers[k] for k in ("X-Page", "X-Per-Page", "X-Next-Page")} == {
                "X-Page": "1",
                "X-Per-Page": "20",
                "X-Next-Page": "2",
            }
            assert (first.headers["X-Prev-Page"], first.headers["X-Total"]) == ("", "250")
            assert first.headers["X-Total-Pages"] == "13"
            assert links(first.headers["Link"]) == {
                "next": f"{listing}?page=2&per_page=20",
                "first": f"{listing}?page=1&per_page=20",
                "last": f"{listing}?page=13&per_page=20",
            }
            capped = await get(session, listing + "?per_page=1000", rest_headers(fake))
            assert (capped.headers["X-Per-Page"], capped.headers["X-Total-Pages"]) == ("100", "3")
            seen: list[int] = []
            pages: list[Reply] = []
            next_url: str | None = listing + "?per_page=100"
            while next_url:
                page = await get(session, next_url, rest_headers(fake))
                pages.append(page)
                seen += [item["id"] for item in page.json()]
                next_url = links(page.headers["Link"]).get("next")
            assert seen == ids
            assert [len(p.json()) for p in pages] == [100, 100, 50]
            last = pages[-1]
            assert (last.headers["X-Page"], last.headers["X-Next-Page"]) == ("3", "")
            assert links(last.headers["Link"])["prev"] == f"{listing}?page=2&per_page=100"
            assert fake.count("/api/v4/projects/big%2Fproject/registry/repositories") == 5

    async def test_tag_details(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """A tag has the documented fields; unknown tags and repositories are 404s."""
        tag = fake.tag(APP, "v1")
        reply = await get(session, tag_url(base, fake), rest_headers(fake))
        assert tag.config_digest is not None
        revision = tag.config_digest.removeprefix("sha256:")
        assert reply.json() == {
            "name": "v1",
            "path": f"{APP}:v1",
            "location": f"registry.example.com/{APP}:v1",
            "revision": revision,
            "short_revision": revision[:9],
            "digest": tag.digest,
            "created_at": "2023-05-01T12:00:00.000+00:00",
            "total_size": tag.size_bytes,
        }
        missing_tag = await get(session, tag_url(base, fake, "nope"), rest_headers(fake))
        assert (missing_tag.status, missing_tag.json()) == (404, {"message": "404 Tag Not Found"})
        other = fake.add_project("other/project")
        elsewhere = await get(session, tag_url(base, fake, project=str(other)), rest_headers(fake))
        assert elsewhere.json() == {"message": "404 Repository Not Found"}
        assert fake.count(tag_url("", fake)) == 1

    @pytest.mark.parametrize(
        ("mode", "value", "expected"),
        [
            (DateMode.GOOD, None, "2023-05-01T12:00:00.000+00:00"),
            (DateMode.GOOD, WRONG, "2021-01-02T03:04:05.678+00:00"),
            (DateMode.NULL, None, None),
            (DateMode.EPOCH, None, EPOCH_TEXT),
            (DateMode.ZERO, None, ZERO_TEXT),
            (DateMode.OTHER, WRONG, "2021-01-02T03:04:05.678+00:00"),
        ],
    )
    async def test_fixed_answers(
        self,
        fake: FakeGitLab,
        base: str,
        session: aiohttp.ClientSession,
        mode: DateMode,
        value: datetime | None,
        expected: str | None,
    ) -> None:
        """Each fixed mode renders `created_at` as specified."""
        fake.set_answer(APP, "v1", "rest", mode, value)
        assert (await get(session, tag_url(base, fake), rest_headers(fake))).json()[
            "created_at"
        ] == expected

    @pytest.mark.parametrize(("mode", "offset"), [(DateMode.NOW, 0), (DateMode.FUTURE, 365)])
    async def test_moving_answers(
        self,
        fake: FakeGitLab,
        base: str,
        session: aiohttp.ClientSession,
        mode: DateMode,
        offset: int,
    ) -> None:
        """NOW is the request's time and FUTURE a year later."""
        fake.set_answer(APP, "v1", "rest", mode)
        before = datetime.now(UTC)
        reply = await get(session, tag_url(base, fake), rest_headers(fake))
        after = datetime.now(UTC)
        answered = datetime.fromisoformat(reply.json()["created_at"]) - timedelta(days=offset)
        assert before - timedelta(milliseconds=1) <= answered <= after


class TestRegistryApi:
    async def test_shape_and_own_dates(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """By default a tag's dates are its own: `updated_at` only once re-pointed, and
        `published_at` the later of the two."""
        reply = await get(session, tags_url(base), BEARER)
        assert reply.status == 200
        assert "Link" not in reply.headers
        v1, v2 = reply.json()
        tag = fake.tag(APP, "v1")
        assert v1 == {
            "name": "v1",
            "digest": tag.digest,
            "config_digest": tag.config_digest,
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "size_bytes": tag.size_bytes,
            "created_at": "2023-05-02T08:30:00.000Z",
            "published_at": "2023-05-02T08:30:00.000Z",
        }
        assert (v2["created_at"], v2["updated_at"], v2["published_at"]) == (
            "2023-05-02T08:30:00.000Z",
            "2023-06-01T09:00:00.000Z",
            "2023-06-01T09:00:00.000Z",
        )

    async def test_older_registry_has_no_published_at(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """A repository switched to pre-v3.85.0 behaviour omits `published_at`."""
        fake.repository(APP).published_at = False
        fake.set_answer(APP, "v1", "registry", DateMode.EPOCH)
        v1, v2 = (await get(session, tags_url(base), BEARER)).json()
        assert "published_at" not in v1
        assert "published_at" not in v2
        assert v1["created_at"] == EPOCH_TEXT

    @pytest.mark.parametrize(
        ("mode", "value", "expected"),
        [
            (DateMode.GOOD, WRONG, "2021-01-02T03:04:05.678Z"),
            (DateMode.NULL, None, None),
            (DateMode.EPOCH, None, EPOCH_TEXT),
            (DateMode.ZERO, None, ZERO_TEXT),
            (DateMode.OTHER, WRONG, "2021-01-02T03:04:05.678Z"),
        ],
    )
    async def test_fixed_answers(
        self,
        fake: FakeGitLab,
        base: str,
        session: aiohttp.ClientSession,
        mode: DateMode,
        value: datetime | None,
        expected: str | None,
    ) -> None:
        """Each fixed mode renders in every date field present; NULL nulls all three."""
        fake.set_answer(APP, "v1", "registry", mode, value)
        fake.set_answer(APP, "v2", "registry", mode, value)
        v1, v2 = (await get(session, tags_url(base), BEARER)).json()
        assert (v1["created_at"], v1["published_at"]) == (expected, expected)
        assert (v2["created_at"], v2["updated_at"], v2["published_at"]) == (expected,) * 3
        if mode is not DateMode.NULL:
            assert "updated_at" not in v1

    @pytest.mark.parametrize(("mode", "offset"), [(DateMode.NOW, 0), (DateMode.FUTURE, 365)])
    async def test_moving_answers(
        self,
        fake: FakeGitLab,
        base: str,
        session: aiohttp.ClientSession,
        mode: DateMode,
        offset: int,
    ) -> None:
        """NOW is the request's time and FUTURE a year later, in `published_at` too."""
        fake.set_answer(APP, "v1", "registry", mode)
        before = datetime.now(UTC)
        v1 = (await get(session, tags_url(base), BEARER)).json()[0]
        after = datetime.now(UTC)
        assert v1["published_at"] == v1["created_at"]
        answered = datetime.fromisoformat(v1["published_at"]) - timedelta(days=offset)
        assert before - timedelta(milliseconds=1) <= answered <= after

    async def test_pagination(self, session: aiohttp.ClientSession) -> None:
        """250 tags come 100 a page by name; Link's `last` marker walks them, with a previous
        link once a marker is followed and no Link on the last page; `before` walks back."""
        fake = FakeGitLab()
        fake.add_repository("big/project", "big/project")
        names = [f"t{i:03}" for i in range(250)]
        for name in reversed(names):
            fake.add_tag("big/project", name)
        async with serve(fake.app()) as url:
            listing = tags_url(url, "big/project")
            seen: list[str] = []
            pages: list[Reply] = []
            next_url: str | None = listing
            while next_url:
                page = await get(session, next_url, BEARER)
                pages.append(page)
                seen += [item["name"] for item in page.json()]
                next_url = links(page.headers.get("Link", "")).get("next")
            assert seen == names
            assert [len(p.json()) for p in pages] == [100, 100, 50]
            assert links(pages[0].headers["Link"]) == {"next": f"{listing}?n=100&last=t099"}
            assert links(pages[1].headers["Link"]) == {
                "previous": f"{listing}?n=100&before=t100",
                "next": f"{listing}?n=100&last=t199",
            }
            assert "Link" not in pages[2].headers
            small = await get(session, listing + "?n=2&last=t010", BEARER)
            assert [t["name"] for t in small.json()] == ["t011", "t012"]
            back = await get(session, listing + "?n=2&before=t010", BEARER)
            assert [t["name"] for t in back.json()] == ["t008", "t009"]
            assert links(back.headers["Link"])["previous"] == f"{listing}?n=2&before=t008"
            exact = await get(session, listing + "?name_exact=t123", BEARER)
            assert [t["name"] for t in exact.json()] == ["t123"]
            for bad, code in (("0", "VALUE"), ("1001", "VALUE"), ("x", "TYPE")):
                refused = await get(session, listing + f"?n={bad}", BEARER)
                assert refused.status == 400
                assert refused.json()["errors"][0]["code"] == f"INVALID_QUERY_PARAMETER_{code}"

    async def test_bearer_required(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """Without a Bearer token the answer is 401 with the challenge of GitLab's registry."""
        refused = await get(session, tags_url(base))
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer realm="https://gitlab.example.com/jwt/auth",service="container_registry",'
            f'scope="repository:{APP}:pull"'
        )
        assert refused.json() == {
            "errors": [
                {"code": "UNAUTHORIZED", "message": "authentication required", "detail": None}
            ]
        }
        assert (await get(session, tags_url(base), {"Authorization": "Bearer "})).status == 401

    async def test_token_set_and_no_auth(self, session: aiohttp.ClientSession) -> None:
        """With `registry_tokens` only those pass; with `registry_auth=False` none is needed."""
        strict = FakeGitLab(registry_tokens={"good"})
        strict.add_repository(PROJECT, PROJECT)
        async with serve(strict.app()) as url:
            assert (await get(session, tags_url(url, PROJECT), BEARER)).status == 401
            good = await get(session, tags_url(url, PROJECT), {"Authorization": "Bearer good"})
            assert (good.status, good.json()) == (200, [])
        open_fake = FakeGitLab(registry_auth=False)
        open_fake.add_repository(PROJECT, PROJECT)
        async with serve(open_fake.app()) as url:
            assert (await get(session, tags_url(url, PROJECT))).status == 200

    async def test_unknown_repository_and_route(
        self, base: str, session: aiohttp.ClientSession
    ) -> None:
        """An unknown repository is 404 NAME_UNKNOWN; the path needs its trailing slash."""
        missing = await get(session, tags_url(base, "group/project/nope"), BEARER)
        assert (missing.status, missing.json()) == (
            404,
            {
                "errors": [
                    {
                        "code": "NAME_UNKNOWN",
                        "message": "repository name not known to registry",
                        "detail": {"name": "group/project/nope"},
                    }
                ]
            },
        )
        no_slash = await get(session, tags_url(base).rstrip("/"), BEARER)
        assert no_slash.status == 404


class TestFaultsAndServing:
    async def test_status_faults(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """A status fault hits only its API, and `heal` clears it."""
        fake.fail("rest", 500)
        fake.fail("registry", 404)
        broken = await get(session, tag_url(base, fake), rest_headers(fake))
        assert (broken.status, broken.json()) == (500, {"message": "500 Internal Server Error"})
        gone = await get(session, tags_url(base), BEARER)
        assert (gone.status, gone.json()["errors"][0]["code"]) == (404, "NAME_UNKNOWN")
        fake.heal("registry")
        assert (await get(session, tags_url(base), BEARER)).status == 200
        assert (await get(session, tag_url(base, fake), rest_headers(fake))).status == 500

    async def test_stall(self, fake: FakeGitLab, session: aiohttp.ClientSession) -> None:
        """A stalled request outlasts a client timeout, and closing the server releases it."""
        fake.fail("registry", stall=math.inf)
        server = TestServer(fake.app())
        await server.start_server()
        url = tags_url(f"http://{server.host}:{server.port}")
        with pytest.raises(TimeoutError):
            async with session.get(url, headers=BEARER, timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
        assert fake.stalled.is_set()
        assert fake.stalled_count == 1
        pending = asyncio.create_task(get(session, url, BEARER))
        await until(lambda: fake.stalled_count == 2)
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 5
        assert (await pending).status == 503

    async def test_stall_then_answer(
        self, fake: FakeGitLab, base: str, session: aiohttp.ClientSession
    ) -> None:
        """A finite stall holds the request, then answers normally."""
        fake.fail("rest", stall=0.3)
        started = time.monotonic()
        reply = await get(session, tag_url(base, fake), rest_headers(fake))
        assert reply.status == 200
        assert time.monotonic() - started >= 0.3

    async def test_roles(self, fake: FakeGitLab, session: aiohttp.ClientSession) -> None:
        """One model can back a GitLab-only and a registry-only host; requests record the host."""
        async with serve(fake.app(registry=False)) as gitlab, serve(fake.app(rest=False)) as reg:
            assert (await get(session, tags_url(gitlab), BEARER)).status == 404
            assert (await get(session, tag_url(reg, fake), rest_headers(fake))).status == 404
            assert (await get(session, tags_url(reg), BEARER)).status == 200
            assert (await get(session, tag_url(gitlab, fake), rest_headers(fake))).status == 200
        hosts = {(r.kind, r.host) for r in fake.requests}
        assert ("registry", reg.removeprefix("http://")) in hosts
        assert ("rest", gitlab.removeprefix("http://")) in hosts

    def test_switch_validation(self, fake: FakeGitLab) -> None:
        """Invalid switches are refused at once rather than at request time."""
        with pytest.raises(ValueError, match="OTHER"):
            fake.set_answer(APP, "v1", "rest", DateMode.OTHER)
        with pytest.raises(ValueError, match="takes no value"):
            fake.set_answer(APP, "v1", "rest", DateMode.NULL, GOOD)
        with pytest.raises(ValueError, match="registry"):
            fake.set_answer(APP, "v1", "registry", DateMode.FROM_CONFIG_BLOB)
        with pytest.raises(ValueError, match="registry_url"):
            fake.set_answer(APP, "v1", "rest", DateMode.FROM_CONFIG_BLOB)
        with pytest.raises(ValueError, match="exactly one"):
            fake.fail("rest")
        with pytest.raises(KeyError):
            fake.add_tag("group/project/nope", "v1")

    def test_threaded_server(self, fake: FakeGitLab) -> None:
        """On its own thread it answers a blocking client, as a subprocess would be."""
        with FakeGitLabServer(fake) as server:
            request = urllib.request.Request(  # noqa: S310 - loopback
                tag_url(server.url, fake), headers=rest_headers(fake)
            )
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                assert json.loads(response.read())["created_at"] == "2023-05-01T12:00:00.000+00:00"


# --- against the real registry ----------------------------------------------------------------

ALPINE = ("canary/alpine", "2023-05")
BROKEN = ("canary/broken", "v1")
IMAGES = [
    {"repository": ALPINE[0], "tag": ALPINE[1], "published": "2023-05-01T12:00:00Z"},
    {"repository": BROKEN[0], "tag": BROKEN[1], "published": "2022-11-30T08:00:00Z"},
]


@pytest.fixture(scope="module")
def real_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A real registry with the two images seeded once for the module."""
    root = tmp_path_factory.mktemp("gitlab-registry")
    with start_registry(root / "registry") as running:
        config = write_config(root, catalog(running.url, IMAGES))
        seed_images(config, "--layers", "1", "--layer-size", "4KiB")
        yield running


def seeded_fake(**options: Any) -> FakeGitLab:
    gitlab = FakeGitLab(**options)
    for repository, tag in (ALPINE, BROKEN):
        gitlab.add_repository("canary", repository)
        gitlab.add_tag(repository, tag)
        gitlab.set_answer(repository, tag, "rest", DateMode.FROM_CONFIG_BLOB)
    return gitlab


def manifest_of(registry: LocalRegistry, repository: str, tag: str) -> tuple[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return response.headers["Docker-Content-Digest"], json.loads(response.read())


@pytest.mark.registry
class TestRealRegistry:
    async def test_from_config_blob(
        self, real_registry: LocalRegistry, session: aiohttp.ClientSession
    ) -> None:
        """FROM_CONFIG_BLOB answers the config blob's `created`, with the real digests."""
        fake = seeded_fake(registry_url=real_registry.url)
        digest, manifest = manifest_of(real_registry, *ALPINE)
        async with serve(fake.app()) as url:
            project = fake.project("canary").id
            repository_id = fake.repository(ALPINE[0]).id
            tag = f"{url}/api/v4/projects/{project}/registry/repositories/{repository_id}/tags/"
            reply = await get(session, tag + ALPINE[1], rest_headers(fake))
            missing = await get(session, tag + "absent", rest_headers(fake))
        body = reply.json()
        assert body["created_at"] == "2023-05-01T12:00:00.000+00:00"
        assert body["digest"] == digest
        assert body["revision"] == manifest["config"]["digest"].removeprefix("sha256:")
        assert body["location"] == f"127.0.0.1:{real_registry.port}/{ALPINE[0]}:{ALPINE[1]}"
        assert missing.status == 404

    async def test_missing_blob_links_make_null(
        self, real_registry: LocalRegistry, session: aiohttp.ClientSession
    ) -> None:
        """With the repository's blob links gone (the incident), the tag answers null."""
        fake = seeded_fake(registry_url=real_registry.url)
        async with serve(fake.app()) as url:
            project = fake.project("canary").id
            repository_id = fake.repository(BROKEN[0]).id
            tag = f"{url}/api/v4/projects/{project}/registry/repositories/{repository_id}/tags/v1"
            before = await get(session, tag, rest_headers(fake))
            real_registry.remove_layer_links(BROKEN[0])
            after = await get(session, tag, rest_headers(fake))
        assert before.json()["created_at"] == "2022-11-30T08:00:00.000+00:00"
        assert (after.status, after.json()["created_at"]) == (200, None)
        assert after.json()["digest"] == before.json()["digest"]

    async def test_proxy_mode(
        self, real_registry: LocalRegistry, session: aiohttp.ClientSession
    ) -> None:
        """With `upstream`, /v2/ is the real registry's while /gitlab/v1/ stays the fake's, and
        FROM_CONFIG_BLOB reads through the upstream."""
        fake = seeded_fake(upstream=real_registry.url, registry_auth=False)
        digest, _ = manifest_of(real_registry, *ALPINE)
        async with serve(fake.app()) as url:
            ping = await get(session, f"{url}/v2/")
            assert ping.status == 200
            assert ping.headers["Docker-Distribution-API-Version"] == "registry/2.0"
            manifest = await get(
                session,
                f"{url}/v2/{ALPINE[0]}/manifests/{ALPINE[1]}",
                {"Accept": "application/vnd.oci.image.manifest.v1+json"},
            )
            assert (manifest.status, manifest.headers["Docker-Content-Digest"]) == (200, digest)
            unknown = await get(session, f"{url}/v2/{ALPINE[0]}/manifests/absent")
            assert unknown.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
            tags = await get(session, tags_url(url, ALPINE[0]))
            assert [t["name"] for t in tags.json()] == [ALPINE[1]]
            project = fake.project("canary").id
            repository_id = fake.repository(ALPINE[0]).id
            tag = f"{url}/api/v4/projects/{project}/registry/repositories/{repository_id}/tags/"
            reply = await get(session, tag + ALPINE[1], rest_headers(fake))
            assert reply.json()["created_at"] == "2023-05-01T12:00:00.000+00:00"
        kinds = [(r.kind, r.path) for r in fake.requests]
        assert ("proxy", "/v2/") in kinds
        assert ("registry", f"/gitlab/v1/repositories/{ALPINE[0]}/tags/list/") in kinds
