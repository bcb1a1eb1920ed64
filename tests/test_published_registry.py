"""Published dates end to end against the real CNCF registry: `probe` and the daemon read the
config blob, a fake GitLab's REST API (which, as GitLab did in 2023, derives `created_at` from the
real registry's config blob) and its registry API (served on the registry's origin, /v2/
forwarded to the real registry), through a healthy registry and through the incident."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from canary.registry.media import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from canary.testbed import LocalRegistry
from tests.conftest import catalog, probe_json, run_cli, seed_images, write_config
from tests.daemon_fixtures import DaemonFactory, DaemonProcess, daemon_catalog, eventually
from tests.fake_gitlab import DateMode, FakeGitLab, FakeGitLabServer

pytestmark = pytest.mark.registry

TOKEN_ENV = "CANARY_TEST_GITLAB_TOKEN"
TOKEN = "glpat-registry-test-secret-0002"
PROJECT = "group/project"
# Pinned, with its project given; the other's project is derived from its path.
PINNED = {
    "repository": "group/project/pinned",
    "tag": "2023-02",
    "published": "2023-02-14T09:30:00Z",
    "gitlab_project": PROJECT,
}
PLAIN = {"repository": "group/project/plain", "tag": "v1"}
IMAGES = [PINNED, PLAIN]
SEED_DEFAULT = datetime(2023, 5, 1, 12, tzinfo=UTC)  # `canary seed`'s config `created`
PUSH_AFTER_BUILD = timedelta(days=1)  # the registry API's date: the push, a day after the build
SOURCES = ["config", "gitlab_api", "gitlab_registry_api"]
SEED_SIZES = ("--layers", "2", "--layer-size", "4KiB")
VALID = "registry_canary_tag_published_date_valid"
STAMP = "registry_canary_tag_published_timestamp_seconds"
NULL_DETAIL = "GitLab's tag has no created_at (null)"
LOST_CONFIG_DETAIL = "the config blob could not be read (blob_unknown)"
FIRST_SIGHT = "newer than the canary's first sight of this tag and digest ("


def built(image: dict[str, str]) -> datetime:
    """The config blob's `created`, as `canary seed` wrote it."""
    pin = image.get("published")
    return datetime.fromisoformat(pin) if pin else SEED_DEFAULT


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def manifest_digest(registry_url: str, repository: str, tag: str) -> str:
    """The tag's digest as the real registry serves it."""
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{registry_url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX])},
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        digest: str = response.headers["Docker-Content-Digest"]
        return digest


def expected_ok(image: dict[str, str]) -> list[dict[str, Any]]:
    """`published` of a healthy pull: every source ok, in config order."""
    created = iso(built(image))
    return [
        {"timestamp": created, "source": "config", "status": "ok", "detail": None},
        {"timestamp": created, "source": "gitlab_api", "status": "ok", "detail": None},
        {
            "timestamp": iso(built(image) + PUSH_AFTER_BUILD),
            "source": "gitlab_registry_api",
            "status": "ok",
            "detail": None,
        },
    ]


@dataclass
class Setup:
    registry: LocalRegistry
    gitlab: FakeGitLab
    url: str  # the fake GitLab: REST, the registry API, and /v2/ forwarded to the registry
    digests: dict[str, str]  # by repository

    def dated_by(self) -> dict[str, Any]:
        """The environment's date settings: every source, GitLab at the fake."""
        return {
            "published_sources": SOURCES,
            "gitlab": {"url": self.url, "token_env": TOKEN_ENV, "timeout": "5s"},
        }


@pytest.fixture
def setup(registry: LocalRegistry, tmp_path: Path) -> Iterator[Setup]:
    """Both images seeded into the real registry, and a fake GitLab that knows them: REST
    answers FROM_CONFIG_BLOB, the registry API answers the push date."""
    seed_config = write_config(tmp_path, catalog(registry.url, IMAGES), "seed.yaml")
    seed_images(seed_config, *SEED_SIZES)
    fake = FakeGitLab(
        token=TOKEN, upstream=registry.url, registry_url=registry.url, registry_auth=False
    )
    digests = {}
    for image in IMAGES:
        repository, tag = image["repository"], image["tag"]
        digests[repository] = manifest_digest(registry.url, repository, tag)
        fake.add_repository(PROJECT, repository)
        fake.add_tag(
            repository,
            tag,
            digest=digests[repository],
            created=built(image),
            pushed=built(image) + PUSH_AFTER_BUILD,
        )
        fake.set_answer(repository, tag, "rest", DateMode.FROM_CONFIG_BLOB)
        fake.set_answer(repository, tag, "registry", DateMode.GOOD)
    with FakeGitLabServer(fake) as server:
        yield Setup(registry, fake, server.url, digests)


def probe_config(setup: Setup, directory: Path) -> Path:
    return write_config(directory, catalog(setup.url, IMAGES, **setup.dated_by()))


def by_repository(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {result["repository"]: result for result in results}


class TestProbe:
    def test_every_source_is_ok_for_both_images(self, setup: Setup, tmp_path: Path) -> None:
        """`probe --format json` lists all three sources ok, in config order, for each image."""
        status, results = probe_json(probe_config(setup, tmp_path), env={TOKEN_ENV: TOKEN})
        assert status == 0, results
        found = by_repository(results)
        for image in IMAGES:
            assert found[image["repository"]]["ok"] is True
            assert found[image["repository"]]["published"] == expected_ok(image)
        kinds = {r.kind for r in setup.gitlab.requests}
        assert {"rest", "registry", "proxy"} <= kinds  # the pull itself went through the fake

    def test_the_incident_loses_the_config_dates_but_not_the_push_date(
        self, setup: Setup, tmp_path: Path
    ) -> None:
        """With a repository's links gone, its config and GitLab dates are missing (GitLab's is
        null, derived from the unreachable blob); the registry API's date and the other image
        stay ok, and the text report names the problems under the image."""
        setup.registry.remove_layer_links(PLAIN["repository"])
        config = probe_config(setup, tmp_path)
        status, results = probe_json(config, env={TOKEN_ENV: TOKEN})
        assert status == 1, results
        found = by_repository(results)
        plain = found[PLAIN["repository"]]
        assert plain["outcome"] == "blob_unknown"
        assert plain["published"] == [
            {
                "timestamp": None,
                "source": "config",
                "status": "missing",
                "detail": LOST_CONFIG_DETAIL,
            },
            {"timestamp": None, "source": "gitlab_api", "status": "missing", "detail": NULL_DETAIL},
            expected_ok(PLAIN)[2],
        ]
        assert found[PINNED["repository"]]["ok"] is True
        assert found[PINNED["repository"]]["published"] == expected_ok(PINNED)

        text = run_cli("probe", "--config", str(config), env={TOKEN_ENV: TOKEN})
        assert text.returncode == 1, text.stderr
        assert (
            f"local {PLAIN['repository']}:{PLAIN['tag']}: published date\n"
            f"    config: missing: {LOST_CONFIG_DETAIL}\n"
            f"    gitlab_api: missing: {NULL_DETAIL}\n"
        ) in text.stdout
        assert f"{PINNED['repository']}:{PINNED['tag']}: published date" not in text.stdout
        row = next(line for line in text.stdout.splitlines() if PLAIN["repository"] in line)
        pushed = iso(SEED_DEFAULT + PUSH_AFTER_BUILD)
        assert (
            f"config - (missing), gitlab_api - (missing), gitlab_registry_api {pushed} (ok)"
        ) in row
        assert TOKEN not in text.stdout + text.stderr


# --- the daemon --------------------------------------------------------------------------------


def validity(daemon: DaemonProcess) -> dict[tuple[str, str], float]:
    """`tag_published_date_valid` by (repository, source); each pair must appear once."""
    found: dict[tuple[str, str], float] = {}
    for sample in daemon.metrics():
        if sample.name == VALID:
            key = (sample.labels["repository"], sample.labels["source"])
            assert key not in found, f"two series for {key}"
            found[key] = sample.value
    return found


def dated(daemon: DaemonProcess) -> set[tuple[str, str]]:
    """The (repository, source) pairs that have a `tag_published_timestamp_seconds` series."""
    return {
        (sample.labels["repository"], sample.labels["source"])
        for sample in daemon.metrics()
        if sample.name == STAMP
    }


def published_of(daemon: DaemonProcess, image: dict[str, str]) -> list[dict[str, Any]]:
    status, document = daemon.get_json("/status")
    assert status == 200, document
    found = [i for i in document["images"] if i["repository"] == image["repository"]]
    assert len(found) == 1, document["images"]
    published: list[dict[str, Any]] | None = found[0]["published"]
    assert published is not None, "not probed yet"
    return published


def every(value: float, images: list[dict[str, str]]) -> dict[tuple[str, str], float]:
    return {(image["repository"], source): value for image in images for source in SOURCES}


def test_daemon_follows_each_source_through_the_incident(
    setup: Setup, daemons: DaemonFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon keeps first sightings in its state file, shows every source in /status and
    /metrics, loses the config-derived dates in the incident but not the push date, and calls a
    GitLab date newer than its first sighting of the tag a default."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the daemon inherits the test's environment
    state_file = tmp_path / "state" / "first-seen.json"
    state_file.parent.mkdir()
    document = daemon_catalog(
        [{"name": "local", "url": setup.url, **setup.dated_by()}],
        IMAGES,
        daemon={"state_file": str(state_file)},
    )
    daemon = daemons.start("published", document)

    def recorded() -> dict[str, dict[str, str]]:
        assert state_file.exists(), "no state file yet"
        tags = json.loads(state_file.read_text(encoding="utf-8"))["tags"]
        found = {t["repository"]: t for t in tags}
        assert {r: (t["tag"], t["digest"]) for r, t in found.items()} == {
            image["repository"]: (image["tag"], setup.digests[image["repository"]])
            for image in IMAGES
        }
        return found

    # Sightings are written at most every 5 s (and at exit), so the second may come later.
    sightings = eventually(recorded, timeout=20)

    def healthy() -> None:
        for image in IMAGES:
            assert published_of(daemon, image) == expected_ok(image)
        assert validity(daemon) == every(1.0, IMAGES)

    eventually(healthy, timeout=20)
    assert dated(daemon) == set(every(1.0, IMAGES))

    setup.registry.remove_layer_links(PLAIN["repository"])

    def incident() -> None:
        assert validity(daemon) == {
            **every(1.0, [PINNED]),
            (PLAIN["repository"], "config"): 0.0,
            (PLAIN["repository"], "gitlab_api"): 0.0,
            (PLAIN["repository"], "gitlab_registry_api"): 1.0,
        }
        published = published_of(daemon, PLAIN)
        assert [(p["source"], p["status"]) for p in published] == [
            ("config", "missing"),
            ("gitlab_api", "missing"),
            ("gitlab_registry_api", "ok"),
        ]
        assert published[1]["detail"] == NULL_DETAIL

    eventually(incident, timeout=20)
    assert dated(daemon) == set(every(1.0, IMAGES)) - {
        (PLAIN["repository"], "config"),
        (PLAIN["repository"], "gitlab_api"),
    }

    # GitLab now dates the healthy tag at the moment it is asked: later than the canary first
    # saw that tag with its digest, which no long-lived image can be.
    setup.gitlab.set_answer(PINNED["repository"], PINNED["tag"], "rest", DateMode.NOW)

    def late_default() -> dict[str, Any]:
        published = published_of(daemon, PINNED)
        assert [(p["source"], p["status"]) for p in published] == [
            ("config", "ok"),
            ("gitlab_api", "default"),
            ("gitlab_registry_api", "ok"),
        ]
        assert validity(daemon)[PINNED["repository"], "gitlab_api"] == 0.0
        return published[1]

    gitlab_api = eventually(late_default, timeout=20)
    detail = gitlab_api["detail"]
    assert detail.startswith(FIRST_SIGHT), detail
    first_seen = datetime.fromisoformat(detail.removeprefix(FIRST_SIGHT).removesuffix(")"))
    recorded_seen = datetime.fromisoformat(sightings[PINNED["repository"]]["first_seen"])
    assert first_seen == recorded_seen  # the sighting judged against is the one on disk
    assert datetime.fromisoformat(gitlab_api["timestamp"]) > first_seen
