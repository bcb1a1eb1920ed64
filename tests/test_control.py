"""The control probe against the real registry: fresh images pushed, pulled back and removed,
catalog repositories never touched, and the incident told apart from a broken registry."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from canary.config import Config, Environment, Image
from canary.control import CONTROL_TAG_PREFIX, LATEST_TAG, ControlProbe, round_tag
from canary.faults import Fault, FaultProxy
from canary.probe import probe_catalog
from canary.registry.client import RegistryClient
from canary.registry.push import list_tags, manifest_digest, push, push_manifest
from canary.results import ControlStep, Outcome, WriteOperation, WriteOutcome
from canary.seed import seed, synthesize
from canary.testbed import LocalRegistry, start_registry
from tests.conftest import catalog, to_config
from tests.daemon_fixtures import StallingProxy

pytestmark = pytest.mark.registry

CONTROL = "canary/control"
CATALOG: list[dict[str, Any]] = [
    {"repository": "canary/alpine", "tag": "2023-05", "published": "2023-05-01T12:00:00Z"},
    {"repository": "canary/multi", "tag": "v1", "platforms": ["linux/amd64", "linux/arm64"]},
]
ROUND_WRITES = sorted(
    [
        (WriteOperation.BLOB_UPLOAD, WriteOutcome.OK),
        (WriteOperation.BLOB_UPLOAD, WriteOutcome.OK),
        (WriteOperation.MANIFEST_PUT, WriteOutcome.OK),
        (WriteOperation.MANIFEST_DELETE, WriteOutcome.OK),
        (WriteOperation.BLOB_DELETE, WriteOutcome.OK),
        (WriteOperation.BLOB_DELETE, WriteOutcome.OK),
    ]
)


def control_config(url: str, **control: Any) -> Config:
    """The catalog with a control repository of its own, as a config file would give it."""
    return to_config(catalog(url, CATALOG, control={"repository": CONTROL, **control}))


def control_probe(url: str, **control: Any) -> tuple[Environment, ControlProbe]:
    config = control_config(url, **control)
    environment = config.environments[0]
    settings = config.control_settings(environment)
    assert settings is not None
    return environment, ControlProbe(environment, *settings)


def tag_folders(registry: LocalRegistry, repository: str) -> list[str]:
    folder = registry.repository_dir(repository) / "_manifests/tags"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def layer_digests(result: Any) -> set[str]:
    return {b.digest for b in result.pull.blobs if b.kind == "layer"}


async def catalog_state(client: RegistryClient, registry: LocalRegistry) -> dict[str, Any]:
    """Every catalog repository's tags, what they point at, and every file of its storage."""
    state: dict[str, Any] = {}
    for entry in CATALOG:
        repository = entry["repository"]
        tags = sorted(await list_tags(client, repository))
        folder = registry.repository_dir(repository)
        state[repository] = (
            tags,
            [await manifest_digest(client, repository, t) for t in tags],
            sorted(str(p.relative_to(folder)) for p in folder.rglob("*")),
        )
    return state


@pytest.fixture
async def seeded(registry: LocalRegistry) -> Config:
    """The catalog pushed by `seed` into the registry."""
    config = control_config(registry.url)
    async with RegistryClient(config.environments[0]) as client:
        reports = await seed(client, list(config.images), 1, 2048)
    assert [r.action for r in reports] == ["pushed", "pushed"]
    return config


class TestRound:
    async def test_push_pull_back_delete(self, registry: LocalRegistry) -> None:
        """A round pushes a fresh image, pulls it back verified and deletes it: no tag is left,
        and its writes are two uploads, a put, a manifest delete and two blob deletes, all ok."""
        environment, probe = control_probe(registry.url)
        async with RegistryClient(environment) as client:
            result = await probe.round(client)
            assert result.ok, json.dumps(result.to_dict(), indent=1)
            assert await list_tags(client, CONTROL) == []
        assert (result.failed_step, result.deleted, result.evidence) == (None, True, None)
        assert result.pull is not None
        assert result.pull.ok
        assert len(result.pull.blobs) == 2
        assert all(b.outcome is Outcome.OK for b in result.pull.blobs)
        assert result.pull.served_digest == result.digest
        assert sorted(result.writes) == ROUND_WRITES
        assert [step for step, _ in result.durations] == [
            ControlStep.PUSH,
            ControlStep.PULL,
            ControlStep.DELETE,
        ]
        assert tag_folders(registry, CONTROL) == []
        assert probe.deletes_supported is True
        json.dumps(result.to_dict())

    async def test_rounds_use_fresh_tags_and_bytes(self, registry: LocalRegistry) -> None:
        """Two rounds push under different tags with different layer digests, so every round
        really uploads; once deletes are known to work, the tag is unique and time-stamped."""
        environment, probe = control_probe(registry.url)
        before = time.time()
        async with RegistryClient(environment) as client:
            first = await probe.round(client)
            second = await probe.round(client)
            assert await list_tags(client, CONTROL) == []
        after = time.time()
        assert first.ok
        assert second.ok
        assert first.tag != second.tag
        assert layer_digests(first).isdisjoint(layer_digests(second))
        assert first.digest != second.digest
        stamp, _, nonce = second.tag.removeprefix(CONTROL_TAG_PREFIX).partition("-")
        assert int(before) <= int(stamp) <= int(after) + 1
        assert len(nonce) == 8
        for result in (first, second):
            assert sorted(result.writes) == ROUND_WRITES

    async def test_catalog_repositories_are_untouched(
        self, registry: LocalRegistry, seeded: Config
    ) -> None:
        """Rounds and leftover removal change nothing in catalog repositories: their tags, the
        digests the tags point at and every file of their storage stay as they were."""
        environment, probe = control_probe(registry.url)
        async with RegistryClient(environment) as client:
            before = await catalog_state(client, registry)
            for _ in range(3):
                assert (await probe.round(client)).ok
            await probe.remove_leftovers(client, time.time() + 3600)
            assert await catalog_state(client, registry) == before

    async def test_incident_old_data_unreadable_new_data_works(
        self, registry: LocalRegistry, seeded: Config
    ) -> None:
        """With the catalog image's blob links gone, its pull is blob_unknown while a control
        round in the same registry pushes, pulls back and deletes fine."""
        registry.remove_layer_links("canary/alpine")
        results = {r.repository: r for r in await probe_catalog(seeded)}
        assert results["canary/alpine"].outcome is Outcome.BLOB_UNKNOWN
        assert results["canary/multi"].ok
        environment, probe = control_probe(registry.url)
        async with RegistryClient(environment) as client:
            result = await probe.round(client)
        assert result.ok, json.dumps(result.to_dict(), indent=1)
        assert result.deleted is True


class TestDeletesTurnedOff:
    async def test_one_tag_overwritten(self, no_delete_registry: LocalRegistry) -> None:
        """Without deletes a round still verifies; the refused delete counts as unsupported,
        `deleted` is None, and every round writes fresh blobs under the one `latest` tag."""
        environment, probe = control_probe(no_delete_registry.url)
        async with RegistryClient(environment) as client:
            results = [await probe.round(client) for _ in range(3)]
            assert await list_tags(client, CONTROL) == [LATEST_TAG]
        assert probe.deletes_supported is False
        assert [(r.ok, r.deleted, r.failed_step, r.tag) for r in results] == [
            (True, None, None, LATEST_TAG)
        ] * 3
        first, *later = results
        assert (WriteOperation.MANIFEST_DELETE, WriteOutcome.UNSUPPORTED) in first.writes
        assert [op for op, _ in first.writes].count(WriteOperation.MANIFEST_DELETE) == 1
        assert WriteOperation.BLOB_DELETE not in [op for op, _ in first.writes]
        for result in later:
            assert sorted(result.writes) == [
                (WriteOperation.BLOB_UPLOAD, WriteOutcome.OK),
                (WriteOperation.BLOB_UPLOAD, WriteOutcome.OK),
                (WriteOperation.MANIFEST_PUT, WriteOutcome.OK),
            ]
        assert len({r.digest for r in results}) == 3
        assert tag_folders(no_delete_registry, CONTROL) == [LATEST_TAG]

    async def test_deletes_turned_on_later_are_noticed(
        self, no_delete_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Once deletes are turned on, the next periodic delete attempt removes `latest` and
        the rounds after it go back to unique tags that leave nothing behind."""
        environment, probe = control_probe(no_delete_registry.url)
        async with RegistryClient(environment) as client:
            assert (await probe.round(client)).deleted is None
        no_delete_registry.stop()
        monkeypatch.setattr("canary.control.DELETE_RECHECK_SECONDS", 0.0)
        with start_registry(no_delete_registry.root) as same_storage:
            async with RegistryClient(control_config(same_storage.url).environments[0]) as client:
                assert await list_tags(client, CONTROL) == [LATEST_TAG]
                again = await probe.round(client)
                after = await probe.round(client)
                assert await list_tags(client, CONTROL) == []
        assert (again.tag, again.deleted, probe.deletes_supported) == (LATEST_TAG, True, True)
        assert after.tag.startswith(CONTROL_TAG_PREFIX)
        assert after.tag != LATEST_TAG
        assert sorted(after.writes) == ROUND_WRITES

    async def test_leftovers_cannot_go(self, no_delete_registry: LocalRegistry) -> None:
        """Leftover removal on a registry without deletes removes nothing, raises nothing, and
        learns that deletes are off."""
        environment, probe = control_probe(no_delete_registry.url)
        old = f"{CONTROL_TAG_PREFIX}{int(time.time()) - 100_000}-0badc0de"
        async with RegistryClient(environment) as client:
            await push(client, synthesize(Image(repository=CONTROL, tag=old), 1, 256))
            assert await probe.remove_leftovers(client, time.time()) == 0
            assert await list_tags(client, CONTROL) == [old]
        assert probe.deletes_supported is False


class TestLeftovers:
    async def test_only_old_control_tags_go(self, registry: LocalRegistry) -> None:
        """Of two old control tags, a current one, `latest` and a tag of someone else's, the
        two old ones are removed and nothing else."""
        environment, probe = control_probe(registry.url)
        now = time.time()
        too_old = int(now - 2 * (probe.interval + probe.timeout))
        old = [
            f"{CONTROL_TAG_PREFIX}{too_old}-0000beef",
            f"{CONTROL_TAG_PREFIX}{too_old - 5}-00c0ffee",
        ]
        kept = [round_tag(now), LATEST_TAG, "someone-elses"]
        async with RegistryClient(environment) as client:
            for tag in old + kept:
                await push(client, synthesize(Image(repository=CONTROL, tag=tag), 1, 256))
            assert await probe.remove_leftovers(client, now) == 2
            assert sorted(await list_tags(client, CONTROL)) == sorted(kept)
        assert probe.leftovers_problem is None
        assert probe.deletes_supported is True

    async def test_a_round_still_in_flight_is_left_alone(self, registry: LocalRegistry) -> None:
        """A control tag younger than interval + timeout may be another replica's round in
        flight: it stays."""
        environment, probe = control_probe(registry.url, interval="60s", timeout="30s")
        now = time.time()
        recent = f"{CONTROL_TAG_PREFIX}{int(now - 80)}-0000beef"
        async with RegistryClient(environment) as client:
            await push(client, synthesize(Image(repository=CONTROL, tag=recent), 1, 256))
            assert await probe.remove_leftovers(client, now) == 0
            assert await list_tags(client, CONTROL) == [recent]
            assert await probe.remove_leftovers(client, now + 20) == 1
            assert await list_tags(client, CONTROL) == []

    async def test_an_image_another_tag_points_at_stays(self, registry: LocalRegistry) -> None:
        """An old control tag whose manifest another tag also points at is not deleted, since
        deleting the manifest would take the other tag with it."""
        environment, probe = control_probe(registry.url)
        now = time.time()
        old = f"{CONTROL_TAG_PREFIX}{int(now) - 100_000}-0000beef"
        image = synthesize(Image(repository=CONTROL, tag=old), 1, 256)
        async with RegistryClient(environment) as client:
            await push(client, image)
            await push_manifest(client, CONTROL, "pinned-by-someone", image.top)
            assert await probe.remove_leftovers(client, now) == 0
            assert sorted(await list_tags(client, CONTROL)) == sorted([old, "pinned-by-someone"])

    async def test_registry_down_is_zero_not_raised(self, registry: LocalRegistry) -> None:
        """With the registry stopped, leftover removal returns 0 and says why, without raising."""
        environment, probe = control_probe(registry.url)
        registry.stop()
        async with RegistryClient(environment) as client:
            assert await probe.remove_leftovers(client, time.time()) == 0
        assert probe.leftovers_problem is not None
        assert "connection_error" in probe.leftovers_problem


class TestFailures:
    async def test_registry_stopped(self, registry: LocalRegistry) -> None:
        """A round against a stopped registry fails at push with connection_error, writes
        nothing (so leaves nothing behind), and returns instead of raising."""
        environment, probe = control_probe(registry.url)
        registry.stop()
        async with RegistryClient(environment) as client:
            # Well past the round's 20 s timeout: a round that does not end fails here.
            result = await asyncio.wait_for(probe.round(client), 60)
        assert (result.outcome, result.failed_step) == (Outcome.CONNECTION_ERROR, ControlStep.PUSH)
        assert (result.writes, result.deleted, result.pull) == ((), True, None)
        assert result.evidence is not None
        assert result.evidence.url.startswith(registry.url)

    async def test_push_timeout(self, registry: LocalRegistry) -> None:
        """A push that stalls past the round's timeout ends the round as timeout at step push,
        the cut-off upload counted as a failed write."""
        proxy = StallingProxy(registry.url, {f"/v2/{CONTROL}/blobs/uploads/"}, 30.0)
        proxy.start()
        try:
            environment, probe = control_probe(proxy.url, timeout="500ms")
            async with RegistryClient(environment) as client:
                # Well past the round's timeout, far short of the 30 s stall.
                result = await asyncio.wait_for(probe.round(client), 10)
        finally:
            proxy.close()
        assert (result.outcome, result.failed_step) == (Outcome.TIMEOUT, ControlStep.PUSH)
        assert result.writes == ((WriteOperation.BLOB_UPLOAD, WriteOutcome.FAILED),)
        assert result.evidence is not None
        assert "timeout of 0.5s (during push)" in result.evidence.detail
        assert result.deleted is False

    async def test_pull_timeout(self, registry: LocalRegistry) -> None:
        """A pull back that stalls past the round's timeout ends the round as timeout at step
        pull, with the pull's result saying where it stopped."""
        with FaultProxy(registry.url) as proxy:
            environment, probe = control_probe(proxy.url, timeout="1s")
            # Blob bodies are read only by the pull (the push asks with HEAD, which has none).
            proxy.inject(r"/blobs/sha256:", Fault.STALL_BODY, seconds=30)
            async with RegistryClient(environment) as client:
                # Well past the round's timeout, far short of the 30 s stall.
                result = await asyncio.wait_for(probe.round(client), 10)
        assert (result.outcome, result.failed_step) == (Outcome.TIMEOUT, ControlStep.PULL)
        assert result.pull is not None
        assert result.pull.outcome is Outcome.TIMEOUT
        assert result.deleted is False

    async def test_refused_delete_is_evidence_not_a_failed_pull(
        self, registry: LocalRegistry
    ) -> None:
        """A delete the registry refuses (403 DENIED) leaves the verdict ok but says deleted
        False, counts the failed delete, names step delete with the evidence, and keeps the
        image whole (no blob deletes) for leftover removal."""
        body = json.dumps({"errors": [{"code": "DENIED", "message": "no deletes for you"}]})
        with FaultProxy(registry.url) as proxy:
            # Only the delete addresses a manifest by digest; push and pull use the tag.
            proxy.inject(r"/manifests/sha256:", Fault.STATUS, status=403, body=body.encode())
            environment, probe = control_probe(proxy.url)
            async with RegistryClient(environment) as client:
                result = await probe.round(client)
        assert result.ok
        assert (result.deleted, result.failed_step) == (False, ControlStep.DELETE)
        assert (WriteOperation.MANIFEST_DELETE, WriteOutcome.FAILED) in result.writes
        assert WriteOperation.BLOB_DELETE not in [op for op, _ in result.writes]
        assert result.evidence is not None
        assert (result.evidence.status, result.evidence.code) == (403, "DENIED")
        assert probe.deletes_supported is None
