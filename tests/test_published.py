"""Published dates: how each observation is judged, and the first sightings kept across restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canary.config import PublishedSource
from canary.probe import probe_catalog
from canary.published.gitlab import candidate_projects
from canary.published.judge import Context, Observation, judge
from canary.published.seen import FirstSeen
from canary.results import PublishedStatus
from tests.conftest import to_config
from tests.fake_registry import FakeRegistry

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
BUILT = datetime(2023, 5, 1, 12, tzinfo=UTC)
PUSHED = datetime(2023, 5, 1, 12, 30, tzinfo=UTC)
CONFIG, REST, REGISTRY = (
    PublishedSource.CONFIG,
    PublishedSource.GITLAB_API,
    PublishedSource.GITLAB_REGISTRY_API,
)


def context(**overrides: object) -> Context:
    settings: dict[str, object] = {"now": NOW, "tolerance": timedelta(seconds=1)}
    settings.update(overrides)
    return Context(**settings)  # type: ignore[arg-type]


def status(source: PublishedSource, stamp: datetime | None, **overrides: object) -> str:
    return str(judge(Observation(source, stamp, "why"), context(**overrides)).status)


class TestJudge:
    def test_a_real_date_is_ok(self) -> None:
        """A past date with nothing to contradict it is ok, from every source."""
        for source in (CONFIG, REST, REGISTRY):
            assert status(source, BUILT) == "ok"

    def test_no_date_is_missing_with_its_reason(self) -> None:
        """A source without a date is missing, and keeps the reason it gave."""
        result = judge(Observation(REST, None, "GitLab's tag has no created_at (null)"), context())
        assert (result.status, result.detail) == (
            PublishedStatus.MISSING,
            "GitLab's tag has no created_at (null)",
        )

    @pytest.mark.parametrize(
        ("stamp", "reason"),
        [
            (datetime(1, 1, 1, tzinfo=UTC), "a zero date (0001-01-01T00:00:00Z)"),
            (datetime(1970, 1, 1, tzinfo=UTC), "a zero date (1970-01-01T00:00:00Z)"),
            (NOW + timedelta(days=365), "a date in the future (2027-11-28T12:00:00Z)"),
        ],
    )
    def test_values_no_long_lived_image_has_are_defaults(
        self, stamp: datetime, reason: str
    ) -> None:
        """Zero values and future dates are defaults, whatever the source."""
        for source in (CONFIG, REST, REGISTRY):
            result = judge(Observation(source, stamp), context())
            assert (result.status, result.detail) == (PublishedStatus.DEFAULT, reason)

    def test_newer_than_the_first_sighting_is_a_default(self) -> None:
        """A tag seen with its digest last week cannot have been published today."""
        seen = NOW - timedelta(days=7)
        assert status(REST, NOW - timedelta(minutes=1), first_seen=seen) == "default"
        assert status(REST, seen - timedelta(days=1), first_seen=seen) == "ok"
        assert status(REST, seen + timedelta(milliseconds=500), first_seen=seen) == "ok"

    def test_younger_than_min_age_is_a_default(self) -> None:
        """With min_age, a date that recent is a default."""
        day = timedelta(days=1)
        assert status(CONFIG, NOW - timedelta(hours=1), min_age=day) == "default"
        assert status(CONFIG, NOW - 2 * day, min_age=day) == "ok"

    def test_config_derived_sources_follow_the_pin(self) -> None:
        """The config blob and GitLab REST must match the pin; the registry's push date need not."""
        for source in (CONFIG, REST):
            assert status(source, BUILT, pin=BUILT) == "ok"
            assert status(source, BUILT + timedelta(seconds=2), pin=BUILT) == "mismatch"
        assert status(REGISTRY, PUSHED, pin=BUILT, config_created=BUILT) == "ok"

    def test_without_a_pin_rest_must_agree_with_the_config_blob(self) -> None:
        """GitLab REST derives its date from the config blob, so it must agree with it."""
        result = judge(Observation(REST, PUSHED), context(config_created=BUILT))
        assert (result.status, result.detail) == (
            PublishedStatus.MISMATCH,
            "the config blob says 2023-05-01T12:00:00Z",
        )
        assert status(REST, BUILT + timedelta(milliseconds=300), config_created=BUILT) == "ok"

    def test_a_push_before_the_build_is_a_mismatch(self) -> None:
        """The registry's date is the push: earlier than the config blob's `created` is wrong."""
        assert status(REGISTRY, BUILT - timedelta(days=1), config_created=BUILT) == "mismatch"
        assert status(REGISTRY, PUSHED, config_created=BUILT) == "ok"

    def test_default_wins_over_mismatch(self) -> None:
        """A zero date that also differs from the pin is reported as what it is: a default."""
        assert status(CONFIG, datetime(1, 1, 1, tzinfo=UTC), pin=BUILT) == "default"


class TestCandidateProjects:
    def test_longest_prefix_first_and_at_least_two_segments(self) -> None:
        """A repository's project is one of its prefixes with a namespace and a name."""
        assert candidate_projects("group/sub/project/image") == [
            "group/sub/project/image",
            "group/sub/project",
            "group/sub",
        ]
        assert candidate_projects("group/project") == ["group/project"]
        assert candidate_projects("image") == []


class TestFirstSeen:
    KEY = ("prod", "canary/alpine", "v1")

    def test_first_sighting_holds_until_the_digest_changes(self) -> None:
        """The same digest keeps its first sighting; a new digest starts again."""
        seen = FirstSeen()
        assert seen.observe(self.KEY, "sha256:a", BUILT) == BUILT
        assert seen.observe(self.KEY, "sha256:a", NOW) == BUILT
        assert seen.observe(self.KEY, "sha256:b", NOW) == NOW

    def test_sightings_survive_a_restart_through_the_state_file(self, tmp_path: Path) -> None:
        """A second canary on the same state file remembers the first one's sightings."""
        path = tmp_path / "state.json"
        first = FirstSeen(path)
        first.observe(self.KEY, "sha256:a", BUILT)
        first.flush()
        again = FirstSeen(path)
        assert again.observe(self.KEY, "sha256:a", NOW) == BUILT
        document = json.loads(path.read_text())
        assert document["tags"] == [
            {
                "environment": "prod",
                "repository": "canary/alpine",
                "tag": "v1",
                "digest": "sha256:a",
                "first_seen": BUILT.isoformat(),
            }
        ]

    def test_tags_leaving_the_catalog_leave_the_file(self, tmp_path: Path) -> None:
        """Forgetting keeps the file as small as the catalog."""
        path = tmp_path / "state.json"
        seen = FirstSeen(path)
        seen.observe(self.KEY, "sha256:a", BUILT)
        seen.observe(("prod", "canary/other", "v1"), "sha256:b", BUILT)
        seen.forget_except({self.KEY})
        tags = json.loads(path.read_text())["tags"]
        assert [t["repository"] for t in tags] == ["canary/alpine"]

    def test_an_unreadable_file_is_a_warning_not_a_crash(self, tmp_path: Path) -> None:
        """A corrupt state file starts empty and says so; the next write replaces it."""
        path = tmp_path / "state.json"
        path.write_text("{not json")
        warnings: list[tuple[str, dict[str, object]]] = []

        class Log:
            def warning(self, event: str, **fields: object) -> None:
                warnings.append((event, fields))

        seen = FirstSeen(path, Log())
        assert seen.observe(self.KEY, "sha256:a", NOW) == NOW
        seen.flush()
        assert warnings == [
            ("state_file_unreadable", {"path": str(path), "error": "JSONDecodeError"})
        ]
        assert json.loads(path.read_text())["tags"][0]["digest"] == "sha256:a"


class TestSlots:
    async def test_a_stalled_gitlab_does_not_hold_the_pull_slot(self) -> None:
        """With one slot, the second image is pulled while the first one's GitLab read still
        hangs: the slot bounds pulls, not date sources."""
        registry = FakeRegistry()
        for repository in ("canary/a", "canary/b"):
            registry.add_image(repository, "v1", [b"layer"])
        release = asyncio.Event()
        asked: list[str] = []

        async def hang(request: web.Request) -> web.Response:
            asked.append(request.path)
            await release.wait()
            return web.json_response([])

        gitlab = web.Application()
        gitlab.router.add_get("/{tail:.*}", hang)
        async with (
            TestServer(registry.app(), host="127.0.0.1") as registry_server,
            TestServer(gitlab, host="127.0.0.1") as gitlab_server,
        ):
            document = {
                "defaults": {"timeout": "5s"},
                "environments": [
                    {
                        "name": "local",
                        "url": f"http://127.0.0.1:{registry_server.port}",
                        "concurrency": 1,
                        "published_sources": ["config", "gitlab_api"],
                        "gitlab": {
                            "url": f"http://127.0.0.1:{gitlab_server.port}",
                            "token_env": "TOKEN",
                            "timeout": "30s",
                        },
                    }
                ],
                "images": [{"repository": r, "tag": "v1"} for r in ("canary/a", "canary/b")],
            }
            config = to_config(document, environ={"TOKEN": "t"})
            probing = asyncio.ensure_future(probe_catalog(config))

            def both_pulled() -> bool:
                manifests = [path for method, path, _ in registry.requests if "/manifests/" in path]
                return len(manifests) == 2

            for _ in range(500):  # bounded: 10 s at most
                if both_pulled():
                    break
                await asyncio.sleep(0.02)
            assert both_pulled(), registry.requests
            assert not probing.done()  # both pulls ran while GitLab still hangs
            release.set()
            results = await probing
        assert [r.ok for r in results] == [True, True]
        assert [r.published[1].status for r in results] == ["missing", "missing"]
