"""Published-date sources against in-process fakes: GitLab REST through `GitLabClient`, the GitLab
registry API through `published_at`, both beside a pull in `probe_image`, and their metrics."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from canary.config import Config, PublishedSource, Target
from canary.metrics import Metrics
from canary.probe import probe_image
from canary.published.gitlab import GitLabClient
from canary.published.judge import Context, Observation, judge
from canary.published.registry_api import published_at
from canary.published.seen import FirstSeen
from canary.published.sources import external_dates
from canary.registry.client import RegistryClient
from canary.results import ImageResult, PublishedStatus
from canary.sinks.metrics import MetricsSink
from tests.conftest import catalog, to_config
from tests.fake_gitlab import DateMode, FakeGitLab
from tests.fake_registry import FakeRegistry, digest

TOKEN_ENV = "CANARY_TEST_GITLAB_TOKEN"
TOKEN = "glpat-unit-test-secret-0001"
PROJECT = "group/project"
APP = "group/project/app"
BUILT = datetime(2023, 5, 1, 12, tzinfo=UTC)  # the fake registry's default config `created`
PUSHED = datetime(2023, 5, 2, 8, 30, tzinfo=UTC)
UPDATED = datetime(2023, 6, 1, 9, tzinfo=UTC)
WRONG = datetime(2021, 1, 2, 3, 4, 5, tzinfo=UTC)
UNUSED_REGISTRY = "http://127.0.0.1:9"  # never contacted: the test reads GitLab only
CONFIG, REST, REGISTRY = (
    PublishedSource.CONFIG,
    PublishedSource.GITLAB_API,
    PublishedSource.GITLAB_REGISTRY_API,
)
VALID = "registry_canary_tag_published_date_valid"
STAMP = "registry_canary_tag_published_timestamp_seconds"


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """`app` on a loopback TestServer; its base URL."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def config_for(
    registry_url: str,
    images: list[dict[str, Any]],
    *,
    sources: Sequence[str] = ("config", "gitlab_api"),
    gitlab_url: str | None = None,
    gitlab_timeout: str = "5s",
    token: str = TOKEN,
    concurrency: int = 4,
    **defaults: Any,
) -> Config:
    """A one-environment config (5 s pulls, 10 ms rechecks); the GitLab token comes from the
    environment variable TOKEN_ENV, here set to `token`."""
    environment: dict[str, Any] = {
        "published_sources": list(sources),
        "concurrency": concurrency,
    }
    if gitlab_url is not None:
        environment["gitlab"] = {
            "url": gitlab_url,
            "token_env": TOKEN_ENV,
            "timeout": gitlab_timeout,
        }
    document = catalog(registry_url, images, **environment)
    document["defaults"] = {"timeout": "5s", "recheck_delay": "10ms", **defaults}
    return to_config(document, environ={TOKEN_ENV: token})


def target_for(registry_url: str, image: dict[str, Any] | None = None, **options: Any) -> Target:
    images = [image or {"repository": APP, "tag": "v1"}]
    return next(config_for(registry_url, images, **options).targets())


@contextlib.asynccontextmanager
async def gitlab_client(
    gitlab_url: str, gitlab_timeout: str = "5s", token: str = TOKEN
) -> AsyncIterator[GitLabClient]:
    target = target_for(
        UNUSED_REGISTRY, gitlab_url=gitlab_url, gitlab_timeout=gitlab_timeout, token=token
    )
    assert target.environment.gitlab is not None
    client = GitLabClient(target.environment.gitlab)
    try:
        yield client
    finally:
        await client.close()


def listing(project: str) -> str:
    """The raw path of a project's container repository list (its path URL-encoded)."""
    return f"/api/v4/projects/{project.replace('/', '%2F')}/registry/repositories"


def listings(fake: FakeGitLab) -> list[str]:
    """The raw paths of every repository listing GitLab received, in order."""
    return [r.path for r in fake.requests if r.path.endswith("/registry/repositories")]


def statuses(result: ImageResult) -> list[tuple[str, str]]:
    return [(str(p.source), str(p.status)) for p in result.published]


# --- GitLab REST -------------------------------------------------------------------------------


@pytest.fixture
def rest() -> FakeGitLab:
    """GitLab with project group/project holding group/project/app (tags v1 to v5)."""
    fake = FakeGitLab(token=TOKEN)
    fake.add_repository(PROJECT, PROJECT)
    fake.add_repository(PROJECT, APP)
    for number in range(1, 6):
        fake.add_tag(APP, f"v{number}", created=BUILT + timedelta(days=number))
    return fake


@pytest.fixture
async def rest_url(rest: FakeGitLab) -> AsyncIterator[str]:
    async with serve(rest.app()) as url:
        yield url


class TestGitLabClient:
    async def test_a_good_date_is_the_observation(self, rest: FakeGitLab, rest_url: str) -> None:
        """GitLab's `created_at` for the tag becomes the observation's timestamp."""
        async with gitlab_client(rest_url) as client:
            observed = await client.created_at(APP, "v1", None)
        assert observed == Observation(REST, BUILT + timedelta(days=1))

    async def test_null_has_no_date_and_says_null(self, rest: FakeGitLab, rest_url: str) -> None:
        """A null `created_at` (the incident) gives no date, with a reason naming the null."""
        rest.set_answer(APP, "v1", "rest", DateMode.NULL)
        async with gitlab_client(rest_url) as client:
            observed = await client.created_at(APP, "v1", None)
        assert observed.timestamp is None
        assert observed.problem is not None
        assert "null" in observed.problem

    async def test_repository_id_is_looked_up_once(self, rest: FakeGitLab, rest_url: str) -> None:
        """Many tags of one repository, read again and at once, list the project only once."""
        async with gitlab_client(rest_url) as client:
            first = [await client.created_at(APP, f"v{n}", None) for n in range(1, 6)]
            again = [await client.created_at(APP, f"v{n}", None) for n in range(1, 6)]
        assert [o.timestamp for o in first] == [BUILT + timedelta(days=n) for n in range(1, 6)]
        assert again == first
        # Derived: the repository's own path (not a project) first, then its project, once each.
        assert listings(rest) == [listing(APP), listing(PROJECT)]

    async def test_concurrent_reads_share_one_lookup(self, rest: FakeGitLab, rest_url: str) -> None:
        """Tags of one repository read at the same moment wait for one lookup, not one each."""
        async with gitlab_client(rest_url) as client:
            observed = await asyncio.gather(
                *(client.created_at(APP, f"v{n}", None) for n in range(1, 6))
            )
        assert all(o.timestamp is not None for o in observed), observed
        assert rest.count(listing(PROJECT)) == 1

    async def test_derived_project_is_the_longest_prefix_gitlab_knows(self) -> None:
        """Without gitlab_project, longer prefixes are tried first and the project is found."""
        fake = FakeGitLab(token=TOKEN)
        nested = "group/project/sub/image"
        fake.add_repository(PROJECT, nested)
        fake.add_tag(nested, "v1", created=BUILT)
        async with serve(fake.app()) as url, gitlab_client(url) as client:
            observed = await client.created_at(nested, "v1", None)
        assert observed == Observation(REST, BUILT)
        assert listings(fake) == [
            listing("group/project/sub/image"),  # 404 Project Not Found
            listing("group/project/sub"),  # 404 Project Not Found
            listing(PROJECT),
        ]
        assert set(fake.projects) == {PROJECT}

    async def test_explicit_project_is_used_directly(self) -> None:
        """With gitlab_project, only that project's repositories are listed."""
        fake = FakeGitLab(token=TOKEN)
        nested = "group/project/sub/image"
        fake.add_repository(PROJECT, nested)
        fake.add_tag(nested, "v1", created=BUILT)
        async with serve(fake.app()) as url, gitlab_client(url) as client:
            observed = await client.created_at(nested, "v1", PROJECT)
        assert observed == Observation(REST, BUILT)
        assert listings(fake) == [listing(PROJECT)]

    async def test_an_explicit_project_without_the_repository_is_missing(
        self, rest: FakeGitLab, rest_url: str
    ) -> None:
        """A gitlab_project that does not hold the repository is a reason, not a guess."""
        rest.add_project("group/other")
        async with gitlab_client(rest_url) as client:
            observed = await client.created_at(APP, "v1", "group/other")
        assert observed == Observation(
            REST, None, f"GitLab project group/other has no container repository {APP}"
        )

    async def test_repository_on_page_three_is_found(self) -> None:
        """The repository list is followed across pages of 100 until the repository appears."""
        fake = FakeGitLab(token=TOKEN)
        paths = [f"{PROJECT}/image-{n:03d}" for n in range(250)]
        for path in paths:
            fake.add_repository(PROJECT, path)
        wanted = paths[230]
        fake.add_tag(wanted, "v1", created=BUILT)
        async with serve(fake.app()) as url, gitlab_client(url) as client:
            observed = await client.created_at(wanted, "v1", PROJECT)
        assert observed == Observation(REST, BUILT)
        pages = [
            (r.query["page"], r.query["per_page"])
            for r in fake.requests
            if r.path == listing(PROJECT)
        ]
        assert pages == [("1", "100"), ("2", "100"), ("3", "100")]

    async def test_a_refused_token_is_named_and_never_shown(self, rest_url: str) -> None:
        """A wrong token is reported as refused, and its value appears nowhere in the result."""
        wrong = "glpat-wrong-secret-value-9999"
        async with gitlab_client(rest_url, token=wrong) as client:
            observed = await client.created_at(APP, "v1", None)
        assert observed == Observation(REST, None, "GitLab refused the token (HTTP 401)")
        assert wrong not in repr(observed)
        assert wrong not in str(observed.problem)

    async def test_an_unknown_tag_is_missing_with_gitlabs_message(self, rest_url: str) -> None:
        """A tag GitLab does not know is missing, with GitLab's "404 Tag Not Found"."""
        async with gitlab_client(rest_url) as client:
            observed = await client.created_at(APP, "no-such-tag", None)
        assert observed.timestamp is None
        assert observed.problem is not None
        assert "404 Tag Not Found" in observed.problem
        judged = judge(observed, Context(now=datetime.now(UTC), tolerance=timedelta(seconds=1)))
        assert judged.status is PublishedStatus.MISSING

    async def test_a_server_error_is_missing(self, rest: FakeGitLab, rest_url: str) -> None:
        """A 500 from GitLab gives no date and says so."""
        rest.fail("rest", 500)
        async with gitlab_client(rest_url) as client:
            observed = await client.created_at(APP, "v1", None)
        assert observed == Observation(REST, None, "GitLab answered HTTP 500")

    async def test_a_stall_is_missing_within_gitlab_timeout(
        self, rest: FakeGitLab, rest_url: str
    ) -> None:
        """A GitLab that never answers is missing "no answer within" its configured timeout."""
        rest.fail("rest", stall=math.inf)
        target = target_for(UNUSED_REGISTRY, gitlab_url=rest_url, gitlab_timeout="500ms")
        assert target.environment.gitlab is not None
        gitlab = GitLabClient(target.environment.gitlab)
        try:
            async with RegistryClient(target.environment) as registry:
                observed = await external_dates(target, registry, gitlab)
        finally:
            await gitlab.close()
        assert observed == [Observation(REST, None, "no answer within 0.5s")]
        assert rest.stalled.is_set()

    async def test_created_at_itself_never_raises_on_a_stall(
        self, rest: FakeGitLab, rest_url: str
    ) -> None:
        """created_at's contract: every failure, a timeout included, is an Observation."""
        rest.fail("rest", stall=math.inf)
        async with gitlab_client(rest_url, gitlab_timeout="300ms") as client:
            observed = await client.created_at(APP, "v1", None)
        assert observed.timestamp is None


# --- the GitLab registry API -------------------------------------------------------------------


@dataclass
class RegistryApi:
    fake: FakeGitLab
    url: str  # the registry's origin: /gitlab/v1 here, /v2/ forwarded to a fake registry

    def requests(self) -> list[dict[str, str]]:
        return [r.query for r in self.fake.requests if r.kind == "registry"]

    async def read(self, repository: str = APP, tag: str = "v1") -> Observation:
        target = target_for(self.url, sources=("config", "gitlab_registry_api"))
        async with RegistryClient(target.environment) as client:
            return await published_at(client, repository, tag)


@pytest.fixture
async def registry_api() -> AsyncIterator[RegistryApi]:
    """The registry API without auth, its /v2/ (the client's ping) answered by a fake registry."""
    async with serve(FakeRegistry().app()) as upstream:
        fake = FakeGitLab(upstream=upstream, registry_auth=False)
        fake.add_repository(PROJECT, APP)
        async with serve(fake.app()) as url:
            yield RegistryApi(fake, url)


class TestRegistryApi:
    async def test_published_at_is_the_date(self, registry_api: RegistryApi) -> None:
        """A registry that gives `published_at` is read for it."""
        registry_api.fake.add_tag(APP, "v1", created=BUILT, pushed=PUSHED, updated=UPDATED)
        assert await registry_api.read() == Observation(REGISTRY, UPDATED)
        assert registry_api.requests() == [{"n": "1000"}]

    async def test_without_published_at_the_later_of_created_and_updated(self) -> None:
        """An older registry (no `published_at`) gives the later of `created_at`, `updated_at`."""
        async with serve(FakeRegistry().app()) as upstream:
            fake = FakeGitLab(upstream=upstream, registry_auth=False)
            fake.add_repository(PROJECT, APP, published_at=False)
            fake.add_tag(APP, "v1", created=BUILT, pushed=PUSHED, updated=UPDATED)
            fake.add_tag(APP, "v2", created=BUILT, pushed=PUSHED)
            async with serve(fake.app()) as url:
                api = RegistryApi(fake, url)
                assert await api.read(tag="v1") == Observation(REGISTRY, UPDATED)
                assert await api.read(tag="v2") == Observation(REGISTRY, PUSHED)

    async def test_a_tag_on_a_later_page_is_found_through_link(
        self, registry_api: RegistryApi
    ) -> None:
        """With 2,500 tags and pages of 1,000, the `Link: rel="next"` pages are followed."""
        for number in range(2500):
            registry_api.fake.add_tag(APP, f"t{number:04d}", created=BUILT, pushed=PUSHED)
        registry_api.fake.add_tag(APP, "t2400", created=BUILT, pushed=UPDATED)
        assert await registry_api.read(tag="t2400") == Observation(REGISTRY, UPDATED)
        assert registry_api.requests() == [
            {"n": "1000"},
            {"n": "1000", "last": "t0999"},
            {"n": "1000", "last": "t1999"},
        ]

    async def test_null_dates_are_missing(self, registry_api: RegistryApi) -> None:
        """A tag whose dates are all null gives no date, and says which fields it lacked."""
        registry_api.fake.add_tag(APP, "v1")
        registry_api.fake.set_answer(APP, "v1", "registry", DateMode.NULL)
        assert await registry_api.read() == Observation(
            REGISTRY, None, "the registry's tag has no published_at or created_at"
        )

    async def test_an_unknown_repository_is_missing_with_the_status(
        self, registry_api: RegistryApi
    ) -> None:
        """A repository the registry does not know is missing, naming the HTTP status."""
        observed = await registry_api.read(repository="group/project/nothing")
        assert observed == Observation(REGISTRY, None, "the registry's tag list answered HTTP 404")

    async def test_a_tag_not_listed_is_missing(self, registry_api: RegistryApi) -> None:
        """A tag absent from every page is missing, not an error."""
        registry_api.fake.add_tag(APP, "v1")
        assert await registry_api.read(tag="v9") == Observation(
            REGISTRY, None, "the registry's tag list does not have the tag"
        )

    async def test_bearer_challenge_is_answered_with_the_pull_scope(self) -> None:
        """A registry API that challenges gets a token for `repository:<path>:pull`."""
        asked: list[dict[str, str]] = []

        async def issue(request: web.Request) -> web.Response:
            asked.append(dict(request.query))
            return web.json_response({"token": "registry-token", "expires_in": 300})

        issuer = web.Application()
        issuer.router.add_get("/jwt/auth", issue)
        async with serve(issuer) as realm, serve(FakeRegistry().app()) as upstream:
            fake = FakeGitLab(
                upstream=upstream,
                realm=f"{realm}/jwt/auth",
                registry_tokens={"registry-token"},
            )
            fake.add_repository(PROJECT, APP)
            fake.add_tag(APP, "v1", created=BUILT, pushed=PUSHED)
            async with serve(fake.app()) as url:
                assert await RegistryApi(fake, url).read() == Observation(REGISTRY, PUSHED)
        assert asked == [{"scope": f"repository:{APP}:pull", "service": "container_registry"}]


# --- beside a pull -----------------------------------------------------------------------------


@dataclass
class World:
    """A fake registry holding group/project/app:v1 (config `created` BUILT), and a fake GitLab
    whose REST API dates that tag BUILT and whose registry API (in front of the fake registry,
    /v2/ forwarded) dates it PUSHED."""

    registry: FakeRegistry
    gitlab: FakeGitLab
    registry_url: str
    gitlab_url: str

    def target(
        self,
        sources: Sequence[str] = ("config", "gitlab_api"),
        *,
        through_gitlab: bool = False,
        image: dict[str, Any] | None = None,
        **options: Any,
    ) -> Target:
        """A target for the tag; `through_gitlab` pulls through GitLab's registry origin, which
        serves the registry API (needed by `gitlab_registry_api`)."""
        url = self.gitlab_url if through_gitlab else self.registry_url
        return target_for(url, image, sources=sources, gitlab_url=self.gitlab_url, **options)

    async def probe(self, target: Target, seen: FirstSeen | None = None) -> ImageResult:
        assert target.environment.gitlab is not None
        gitlab = GitLabClient(target.environment.gitlab)
        try:
            async with RegistryClient(target.environment) as client:
                return await probe_image(client, target, gitlab, seen)
        finally:
            await gitlab.close()


@contextlib.asynccontextmanager
async def _world(created: datetime) -> AsyncIterator[World]:
    registry = FakeRegistry()
    registry.add_image(APP, "v1", [b"layer-a" * 500, b"layer-b" * 900], created=_iso(created))
    async with serve(registry.app()) as registry_url:
        gitlab = FakeGitLab(token=TOKEN, upstream=registry_url, registry_auth=False)
        gitlab.add_repository(PROJECT, APP)
        gitlab.add_tag(APP, "v1", created=created, pushed=max(created, PUSHED))
        async with serve(gitlab.app()) as gitlab_url:
            yield World(registry, gitlab, registry_url, gitlab_url)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with _world(BUILT) as made:
        yield made


class TestProbeImage:
    async def test_both_sources_ok_beside_a_good_pull(self, world: World) -> None:
        """A verified pull with config and GitLab REST agreeing reports both ok, in order."""
        result = await world.probe(world.target())
        assert result.ok, result
        assert [(p.source, p.timestamp, p.status) for p in result.published] == [
            (CONFIG, BUILT, PublishedStatus.OK),
            (REST, BUILT, PublishedStatus.OK),
        ]

    async def test_results_follow_the_configured_order(self, world: World) -> None:
        """`published` lists the sources in the environment's order, not a fixed one."""
        result = await world.probe(
            world.target(("gitlab_registry_api", "gitlab_api", "config"), through_gitlab=True)
        )
        assert result.ok, result
        assert statuses(result) == [
            ("gitlab_registry_api", "ok"),
            ("gitlab_api", "ok"),
            ("config", "ok"),
        ]
        assert result.published[0].timestamp == PUSHED

    async def test_an_epoch_from_gitlab_is_a_default_and_the_pull_is_ok(self, world: World) -> None:
        """GitLab answering the Unix epoch is that source's `default`; the pull still verifies."""
        world.gitlab.set_answer(APP, "v1", "rest", DateMode.EPOCH)
        result = await world.probe(world.target())
        assert result.ok, result
        assert statuses(result) == [("config", "ok"), ("gitlab_api", "default")]
        assert result.published[1].detail == "a zero date (1970-01-01T00:00:00Z)"

    async def test_a_stalled_gitlab_never_holds_the_pull(self, world: World) -> None:
        """GitLab stalling makes its source missing; the pull is ok and its duration is its own."""
        world.gitlab.fail("rest", stall=math.inf)
        result = await world.probe(world.target(gitlab_timeout="1s"))
        assert world.gitlab.stalled.is_set()
        assert result.ok, result
        assert statuses(result) == [("config", "ok"), ("gitlab_api", "missing")]
        assert result.published[1].detail == "no answer within 1s"
        assert result.duration_seconds < 1.0

    async def test_gitlab_off_the_config_blob_without_a_pin_is_a_mismatch(
        self, world: World
    ) -> None:
        """Without a pin, a GitLab date that differs from the config blob's is a mismatch."""
        world.gitlab.set_answer(APP, "v1", "rest", DateMode.OTHER, WRONG)
        result = await world.probe(world.target())
        assert result.ok, result
        assert statuses(result) == [("config", "ok"), ("gitlab_api", "mismatch")]
        assert result.published[1].timestamp == WRONG
        assert result.published[1].detail == "the config blob says 2023-05-01T12:00:00Z"

    async def test_min_age_makes_a_recent_date_a_default(self) -> None:
        """With min_age, an image built an hour ago has a default date from every source."""
        recent = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        async with _world(recent) as world:
            result = await world.probe(world.target(min_age="24h"))
        assert result.ok, result
        assert statuses(result) == [("config", "default"), ("gitlab_api", "default")]
        assert result.published[0].timestamp == recent
        assert result.published[0].detail == "younger than min_age (86400s)"

    async def test_a_date_newer_than_the_first_sighting_is_a_default(self, world: World) -> None:
        """GitLab saying "now" for a tag the canary saw with this digest yesterday is a default."""
        target = world.target()
        manifest = world.registry.manifests[APP, "v1"][1]
        seen = FirstSeen()
        yesterday = datetime.now(UTC) - timedelta(days=1)
        seen.observe(target.key, digest(manifest), yesterday)
        world.gitlab.set_answer(APP, "v1", "rest", DateMode.NOW)
        result = await world.probe(target, seen)
        assert result.ok, result
        assert statuses(result) == [("config", "ok"), ("gitlab_api", "default")]
        assert result.published[1].detail == (
            f"newer than the canary's first sight of this tag and digest ({_iso(yesterday)})"
        )

    async def test_a_stalled_registry_api_never_holds_the_pull(self, world: World) -> None:
        """A registry API that never answers is missing; the pull still verifies on time."""
        world.gitlab.fail("registry", stall=math.inf)
        target = world.target(
            ("config", "gitlab_registry_api"), through_gitlab=True, concurrency=1, timeout="2s"
        )
        result = await world.probe(target)
        assert statuses(result) == [("config", "ok"), ("gitlab_registry_api", "missing")]
        assert result.ok, result


# --- metrics -----------------------------------------------------------------------------------


class Exposition:
    """A MetricsSink on its own CollectorRegistry, read back per published-date source."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sink = MetricsSink(Metrics(self.registry))

    def value(self, name: str, result: ImageResult, source: str) -> float | None:
        labels = {
            "environment": result.environment,
            "repository": result.repository,
            "tag": result.tag,
            "source": source,
        }
        return self.registry.get_sample_value(name, labels)


ALL = ("config", "gitlab_api", "gitlab_registry_api")


class TestMetrics:
    async def test_validity_and_timestamps_per_source(self, world: World) -> None:
        """Each source has its validity (1 only for ok) and a timestamp only when dated."""
        world.gitlab.set_answer(APP, "v1", "rest", DateMode.EPOCH)
        world.gitlab.set_answer(APP, "v1", "registry", DateMode.NULL)
        target = world.target(ALL, through_gitlab=True)
        result = await world.probe(target)
        assert statuses(result) == [
            ("config", "ok"),
            ("gitlab_api", "default"),
            ("gitlab_registry_api", "missing"),
        ]
        metrics = Exposition()
        metrics.sink.track([target])
        metrics.sink.consume(result)
        valid = {s: metrics.value(VALID, result, s) for s in ALL}
        assert valid == {"config": 1.0, "gitlab_api": 0.0, "gitlab_registry_api": 0.0}
        stamps = {s: metrics.value(STAMP, result, s) for s in ALL}
        assert stamps == {
            "config": BUILT.timestamp(),
            "gitlab_api": 0.0,  # the epoch is a date, if a default one
            "gitlab_registry_api": None,
        }

    async def test_a_source_that_loses_its_date_loses_its_timestamp(self, world: World) -> None:
        """A timestamp series disappears once its source stops giving a date."""
        target = world.target(ALL, through_gitlab=True)
        metrics = Exposition()
        metrics.sink.track([target])
        first = await world.probe(target)
        metrics.sink.consume(first)
        assert metrics.value(STAMP, first, "gitlab_registry_api") == PUSHED.timestamp()
        assert metrics.value(VALID, first, "gitlab_registry_api") == 1.0
        world.gitlab.set_answer(APP, "v1", "registry", DateMode.NULL)
        second = await world.probe(target)
        metrics.sink.consume(second)
        assert metrics.value(STAMP, second, "gitlab_registry_api") is None
        assert metrics.value(VALID, second, "gitlab_registry_api") == 0.0
        assert metrics.value(STAMP, second, "config") == BUILT.timestamp()

    async def test_a_source_removed_by_a_reload_loses_its_series(self, world: World) -> None:
        """Dropping a source from published_sources drops its series, or its alert never ends."""
        world.gitlab.set_answer(APP, "v1", "rest", DateMode.NULL)
        before = world.target(("config", "gitlab_api"))
        metrics = Exposition()
        metrics.sink.track([before])
        first = await world.probe(before)
        metrics.sink.consume(first)
        assert metrics.value(VALID, first, "gitlab_api") == 0.0
        after = world.target(("config",))
        metrics.sink.track([after])
        metrics.sink.consume(await world.probe(after))
        assert metrics.value(VALID, first, "gitlab_api") is None
