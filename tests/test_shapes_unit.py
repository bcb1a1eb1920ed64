"""Every data shape a long-lived registry holds, against a fake registry: schema 1, foreign layers,
artifacts, nested indexes, referrers; and the pause before a confirming fetch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canary.diagnosis import Kind, classify
from canary.probe import probe_image
from canary.registry.client import RegistryClient
from canary.registry.media import ACCEPT
from canary.results import BlobKind, Hop, ImageResult, Outcome, PublishedStatus, SkipReason
from tests import shapes
from tests.conftest import catalog, to_config
from tests.fake_registry import FakeRegistry, oci_error

REPO = "canary/app"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRegistry, str]]:
    registry = FakeRegistry()
    server = TestServer(registry.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield registry, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[dict[str, bytes], list[dict[str, str]], str]]:
    """Another server, where foreign layers' `urls` point: path → body, and the headers of every
    request it saw."""
    served: dict[str, bytes] = {}
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        body = served.get(request.path)
        if body is None:
            return web.Response(status=404, text="not here")
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield served, seen, f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


def load(registry: FakeRegistry, manifest: shapes.Manifest, tag: str | None = None) -> str:
    """Serve `manifest` with its blobs and children, as a registry that was pushed it would."""
    for blob in manifest.blobs:
        registry.blobs[blob.digest] = blob.data
    for child in manifest.children:
        load(registry, child)
    registry.manifests[REPO, manifest.digest] = (manifest.media_type, manifest.body)
    if tag is not None:
        registry.manifests[REPO, tag] = (manifest.media_type, manifest.body)
    if manifest.canonical is not None:
        registry.served_digests[shapes.sha256(manifest.body)] = manifest.digest
    return manifest.digest


async def probe(url: str, defaults: dict[str, Any] | None = None, **image: Any) -> ImageResult:
    document = catalog(url, [{"repository": REPO, "tag": "v1", **image}])
    document["defaults"] = {"timeout": "5s", "recheck_delay": "10ms", **(defaults or {})}
    target = next(to_config(document).targets())
    async with RegistryClient(target.environment) as client:
        return await probe_image(client, target)


def blob_requests(registry: FakeRegistry) -> list[str]:
    return [path.rpartition("/")[2] for _, path, _ in registry.requests if "/blobs/" in path]


def lose(registry: FakeRegistry, blob: shapes.Blob) -> None:
    del registry.blobs[blob.digest]


class TestSchema1:
    async def test_signed_manifest_verifies_against_its_payload(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """A signed schema 1 manifest's digest is its payload's, as the registry says and a pin
        holds; each distinct blobSum is fetched once; the date is the newest history entry's."""
        registry, url = fake
        manifest = shapes.schema1("signed")
        load(registry, manifest, "v1")
        assert shapes.sha256(manifest.body) != manifest.digest
        result = await probe(url, digest=manifest.digest, published="2016-02-03T04:05:06Z")
        assert result.ok, result
        assert result.matches_pin is True
        assert result.manifests[0].media_type == shapes.SCHEMA1_SIGNED
        assert result.served_digest == manifest.digest
        layers, empty = manifest.blobs[:2], manifest.blobs[2]
        assert sorted(b.digest for b in result.blobs) == sorted(b.digest for b in layers)
        assert sorted(blob_requests(registry)) == sorted(b.digest for b in layers)
        # Like containerd, Docker and skopeo, never the layer its history marks empty.
        assert [(s.digest, s.reason) for s in result.skipped] == [
            (empty.digest, SkipReason.EMPTY_LAYER)
        ]
        assert {b.kind for b in result.blobs} == {BlobKind.LAYER}
        assert {b.platform for b in result.blobs} == {"linux/amd64"}
        (published,) = result.published
        assert published.status is PublishedStatus.OK
        assert published.timestamp is not None
        assert published.timestamp.isoformat() == "2016-02-03T04:05:06.123456+00:00"

    async def test_unsigned_and_plain_text(self, fake: tuple[FakeRegistry, str]) -> None:
        """Unsigned v1+json is its own payload; a schema 1 body served as text/plain is read as
        schema 1, as containerd reads it."""
        registry, url = fake
        unsigned = shapes.schema1("unsigned", signed=False)
        load(registry, unsigned, "v1")
        result = await probe(url, digest=unsigned.digest)
        assert result.ok, result
        signed = shapes.schema1("plain")
        load(registry, signed, "v1")
        registry.manifests[REPO, "v1"] = ("text/plain", signed.body)
        result = await probe(url, digest=signed.digest)
        assert result.ok, result
        assert result.manifests[0].media_type == shapes.SCHEMA1_SIGNED

    async def test_a_lost_layer_is_blob_unknown_on_that_layer(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Schema 1 no longer hides lost layers behind a digest mismatch of its manifest."""
        registry, url = fake
        manifest = shapes.schema1("lost")
        load(registry, manifest, "v1")
        lost = manifest.blobs[0]
        lose(registry, lost)
        result = await probe(url, digest=manifest.digest)
        assert result.outcome is Outcome.BLOB_UNKNOWN
        assert [b.digest for b in result.blobs if b.outcome is not Outcome.OK] == [lost.digest]
        assert result.manifests[0].outcome is Outcome.OK
        assert result.blobs_unknown == 1

    async def test_a_lost_empty_layer_is_not_a_failure(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """An empty layer no runtime downloads may be gone without failing the pull."""
        registry, url = fake
        manifest = shapes.schema1("empty")
        load(registry, manifest, "v1")
        lose(registry, manifest.blobs[2])
        result = await probe(url, digest=manifest.digest)
        assert result.ok, result
        assert result.verified_blobs == 2

    async def test_size_zero_history_marks_an_empty_layer(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Without `throwaway`, a `Size` of 0 marks the layer empty; with neither it is fetched."""
        registry, url = fake
        manifest = shapes.schema1("sized", signed=False)
        document = json.loads(manifest.body)
        for step in document["history"]:
            compatibility = json.loads(step["v1Compatibility"])
            empty = compatibility.pop("throwaway", False)
            if empty:
                compatibility["Size"] = 0
            step["v1Compatibility"] = json.dumps(compatibility)
        body = json.dumps(document).encode()
        load(registry, shapes.Manifest(body, shapes.SCHEMA1_UNSIGNED, manifest.blobs), "v1")
        result = await probe(url)
        assert result.ok, result
        assert [s.reason for s in result.skipped] == [SkipReason.EMPTY_LAYER]
        assert result.verified_blobs == 2

    async def test_a_tampered_payload_is_a_digest_mismatch(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Changing the signed part changes the digest; the signatures alone do not count."""
        registry, url = fake
        manifest = shapes.schema1("tampered")
        load(registry, manifest, "v1")
        forged = manifest.body.replace(b'"tag": "v1"', b'"tag": "v2"')
        registry.manifests[REPO, "v1"] = (shapes.SCHEMA1_SIGNED, forged)
        result = await probe(url, digest=manifest.digest)
        assert result.outcome is Outcome.DIGEST_MISMATCH
        resigned = manifest.body.replace(b'"signature": "', b'"signature": "X')
        registry.manifests[REPO, "v1"] = (shapes.SCHEMA1_SIGNED, resigned)
        registry.served_digests[shapes.sha256(resigned)] = manifest.digest
        assert (await probe(url, digest=manifest.digest)).ok

    async def test_accept_lists_schema1_after_every_current_type(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Schema 1 types come last before */*, so a registry holding both serves schema 2."""
        registry, url = fake
        load(registry, shapes.image("accept"), "v1")
        await probe(url)
        accept = next(h["Accept"] for _, p, h in registry.requests if "/manifests/" in p)
        assert accept == ACCEPT
        types = [t.strip() for t in accept.split(",")]
        assert types[-3:] == [shapes.SCHEMA1_SIGNED, shapes.SCHEMA1_UNSIGNED, "*/*"]
        assert types[:4] == [
            shapes.DOCKER_MANIFEST,
            "application/vnd.docker.distribution.manifest.list.v2+json",
            shapes.OCI_MANIFEST,
            shapes.OCI_INDEX,
        ]


class TestForeignLayers:
    FOREIGN = shapes.Blob(b"windows base layer" * 100, shapes.DOCKER_FOREIGN)

    async def test_skipped_by_default_and_never_requested(
        self,
        fake: tuple[FakeRegistry, str],
        elsewhere: tuple[dict[str, bytes], list[dict[str, str]], str],
    ) -> None:
        """A foreign layer is reported skipped with its reason, and fetched from nowhere."""
        registry, url = fake
        _, seen, source = elsewhere
        manifest = shapes.foreign_image("win", self.FOREIGN, [f"{source}/base"])
        load(registry, manifest, "v1")
        result = await probe(url)
        assert result.ok, result
        (skipped,) = result.skipped
        assert skipped.digest == self.FOREIGN.digest
        assert skipped.reason is SkipReason.NON_DISTRIBUTABLE
        assert "foreign_layers: urls" in skipped.detail
        assert self.FOREIGN.digest not in blob_requests(registry)
        assert seen == []
        assert result.verified_blobs == 2  # the config and the image's own layer

    async def test_a_base_layer_shared_by_two_images_is_skipped_once(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        registry, url = fake
        urls = ["http://127.0.0.1:9/base"]
        first = shapes.foreign_image("win-a", self.FOREIGN, urls)
        second = shapes.foreign_image("win-b", self.FOREIGN, urls)
        load(registry, shapes.index([(first, None), (second, None)]), "v1")
        result = await probe(url)
        assert result.ok, result
        assert [s.digest for s in result.skipped] == [self.FOREIGN.digest]
        own = {b.digest for b in (*first.blobs, *second.blobs)}  # one config, shared
        assert {b.digest for b in result.blobs} == own

    async def test_a_lost_own_layer_is_still_blob_unknown(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Beside a skipped foreign layer, a real loss of the image's own layer still pages."""
        registry, url = fake
        manifest = shapes.foreign_image("win", self.FOREIGN, ["http://127.0.0.1:9/base"])
        load(registry, manifest, "v1")
        own = manifest.blobs[1]
        lose(registry, own)
        result = await probe(url)
        assert result.outcome is Outcome.BLOB_UNKNOWN
        assert [b.digest for b in result.failures] == [own.digest]
        assert result.blobs_unknown == 1
        assert len(result.skipped) == 1

    @pytest.mark.parametrize("docker", [True, False])
    async def test_urls_verified_at_their_source_without_credentials(
        self,
        fake: tuple[FakeRegistry, str],
        elsewhere: tuple[dict[str, bytes], list[dict[str, str]], str],
        docker: bool,
    ) -> None:
        """With foreign_layers: urls the layer is fetched and verified at its URL, hop foreign,
        the first URL that has it winning, and the registry's credentials never sent there."""
        registry, url = fake
        served, seen, source = elsewhere
        served["/second"] = self.FOREIGN.data
        urls = ["ftp://ignored/x", f"{source}/first", f"{source}/second"]
        manifest = shapes.foreign_image("win", self.FOREIGN, urls, docker=docker)
        load(registry, manifest, "v1")
        registry.basic_auth = "Basic Y2FuYXJ5OnNlY3JldA=="  # canary:secret
        result = await _probe_with_auth(url, {"foreign_layers": "urls"})
        assert result.ok, result
        foreign = next(b for b in result.blobs if b.digest == self.FOREIGN.digest)
        assert foreign.hop is Hop.FOREIGN
        assert foreign.bytes == len(self.FOREIGN.data)
        assert result.skipped == ()
        assert len(seen) == 2
        assert all("Authorization" not in headers for headers in seen)

    async def test_a_lost_source_fails_the_pull_but_never_pages(
        self,
        fake: tuple[FakeRegistry, str],
        elsewhere: tuple[dict[str, bytes], list[dict[str, str]], str],
    ) -> None:
        """A 404 at the foreign source is blob_unknown at hop foreign: the pull fails, but it
        is not the registry's data, so no unknown blob is counted and no diagnosis sees loss."""
        registry, url = fake
        _, _, source = elsewhere
        manifest = shapes.foreign_image("win", self.FOREIGN, [f"{source}/gone"])
        load(registry, manifest, "v1")
        result = await probe(url, foreign_layers="urls")
        assert result.outcome is Outcome.BLOB_UNKNOWN
        (failed,) = result.failures
        assert failed.hop is Hop.FOREIGN
        assert failed.evidence is not None
        assert failed.evidence.url == f"{source}/gone"
        assert result.blobs_unknown is None  # unknown to the registry: none; but not verified
        assert classify(result) is Kind.OTHER

    async def test_the_registry_may_hold_it_after_all(
        self,
        fake: tuple[FakeRegistry, str],
        elsewhere: tuple[dict[str, bytes], list[dict[str, str]], str],
    ) -> None:
        """As containerd does, the registry is asked when no URL has the layer."""
        registry, url = fake
        _, _, source = elsewhere
        manifest = shapes.foreign_image("win", self.FOREIGN, [f"{source}/gone"])
        load(registry, manifest, "v1")
        registry.blobs[self.FOREIGN.digest] = self.FOREIGN.data
        result = await probe(url, foreign_layers="urls")
        assert result.ok, result
        foreign = next(b for b in result.blobs if b.digest == self.FOREIGN.digest)
        assert foreign.hop is Hop.REGISTRY


async def _probe_with_auth(url: str, defaults: dict[str, Any]) -> ImageResult:
    document = catalog(
        url,
        [{"repository": REPO, "tag": "v1"}],
        auth={"username": "canary", "password_env": "CANARY_SECRET"},
    )
    document["defaults"] = {"timeout": "5s", "recheck_delay": "10ms", **defaults}
    target = next(to_config(document, {"CANARY_SECRET": "secret"}).targets())
    async with RegistryClient(target.environment) as client:
        return await probe_image(client, target)


class TestArtifacts:
    async def test_empty_config_and_the_created_annotation(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """An artifact with the empty config verifies blob by blob and takes its date from
        the manifest's org.opencontainers.image.created annotation."""
        registry, url = fake
        manifest = shapes.artifact(
            "chart", artifact_type="application/vnd.example.thing", created="2021-01-02T03:04:05Z"
        )
        load(registry, manifest, "v1")
        result = await probe(url)
        assert result.ok, result
        assert result.verified_blobs == 2
        (published,) = result.published
        assert published.status is PublishedStatus.OK
        assert published.timestamp is not None
        assert published.timestamp.isoformat() == "2021-01-02T03:04:05+00:00"

    async def test_helm_chart_config_date_wins_over_the_annotation(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """A config with `created` gives the date; the annotation is only the fallback."""
        registry, url = fake
        config = json.dumps({"name": "chart", "created": "2020-05-06T07:08:09Z"}).encode()
        manifest = shapes.artifact(
            "helm",
            config_type=shapes.HELM_CONFIG,
            config_data=config,
            created="2021-01-02T03:04:05Z",
        )
        load(registry, manifest, "v1")
        result = await probe(url)
        assert result.ok
        assert result.published[0].timestamp is not None
        assert result.published[0].timestamp.year == 2020

    async def test_no_date_anywhere_is_missing_unless_not_judged(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Without a date the entry's date is missing, saying where it looked; with
        published_sources: [] it is not judged at all, and the pull is ok either way."""
        registry, url = fake
        binary = shapes.artifact("bin", config_type="application/octet-stream", config_data=b"\x00")
        load(registry, binary, "v1")
        judged = await probe(url)
        assert judged.ok
        (published,) = judged.published
        assert published.status is PublishedStatus.MISSING
        assert (
            published.detail == "config blob is not JSON: Expecting value: line 1 column 1 (char 0)"
        )
        empty = shapes.artifact("empty")
        load(registry, empty, "v1")
        judged = await probe(url)
        assert judged.published[0].detail == (
            "the config has no `created` field, and the manifest no "
            "org.opencontainers.image.created annotation"
        )
        unjudged = await probe(url, published_sources=[])
        assert unjudged.ok
        assert unjudged.published == ()

    async def test_a_bad_annotation_is_named(self, fake: tuple[FakeRegistry, str]) -> None:
        registry, url = fake
        load(registry, shapes.artifact("bad", created="yesterday"), "v1")
        result = await probe(url)
        assert result.published[0].status is PublishedStatus.MISSING
        assert result.published[0].detail == (
            "the org.opencontainers.image.created annotation is not an RFC 3339 date: 'yesterday'"
        )


class TestNestedIndexes:
    async def test_nested_indexes_and_entries_without_a_platform(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """An index in an index is followed; entries without a platform too, their platform
        read from the config; every blob is verified."""
        registry, url = fake
        amd = shapes.image("amd", platform=("linux", "amd64"))
        arm = shapes.image("arm", platform=("linux", "arm64"))
        inner = shapes.index([(arm, None)])
        top = shapes.index([(amd, {"os": "linux", "architecture": "amd64"}), (inner, None)])
        load(registry, top, "v1")
        result = await probe(url)
        assert result.ok, result
        assert len(result.manifests) == 4
        assert {b.digest for b in result.blobs} == {b.digest for b in (*amd.blobs, *arm.blobs)}
        assert result.verified_blobs == 6
        assert {b.platform for b in result.blobs} == {"linux/amd64", "linux/arm64"}

    async def test_a_nested_entry_with_a_platform(self, fake: tuple[FakeRegistry, str]) -> None:
        """An index entry with a platform that is itself an index is followed, not refused."""
        registry, url = fake
        arm = shapes.image("arm", platform=("linux", "arm64"))
        inner = shapes.index([(arm, {"os": "linux", "architecture": "arm64"})])
        top = shapes.index([(inner, {"os": "linux", "architecture": "arm64"})])
        load(registry, top, "v1")
        result = await probe(url, platforms=["linux/arm64"])
        assert result.ok, result
        assert result.verified_blobs == 3

    async def test_platform_filter_applies_at_the_leaves(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Under nested indexes the filter picks image manifests; a platform none has is
        manifest_unknown, as before."""
        registry, url = fake
        amd = shapes.image("amd", platform=("linux", "amd64"))
        arm = shapes.image("arm", platform=("linux", "arm64"))
        inner = shapes.index(
            [
                (amd, {"os": "linux", "architecture": "amd64"}),
                (arm, {"os": "linux", "architecture": "arm64"}),
            ]
        )
        load(registry, shapes.index([(inner, None)]), "v1")
        only_arm = await probe(url, platforms=["linux/arm64"])
        assert only_arm.ok, only_arm
        assert {b.digest for b in only_arm.blobs} == {b.digest for b in arm.blobs}
        absent = await probe(url, platforms=["linux/arm64", "linux/s390x"])
        assert absent.outcome is Outcome.MANIFEST_UNKNOWN
        assert absent.manifests[-1].platform == "linux/s390x"

    async def test_lost_blob_under_a_nested_index(self, fake: tuple[FakeRegistry, str]) -> None:
        registry, url = fake
        arm = shapes.image("arm", platform=("linux", "arm64"))
        load(registry, shapes.index([(shapes.index([(arm, None)]), None)]), "v1")
        lose(registry, arm.blobs[2])
        result = await probe(url)
        assert result.outcome is Outcome.BLOB_UNKNOWN
        assert [b.digest for b in result.failures] == [arm.blobs[2].digest]

    async def test_depth_is_bounded(self, fake: tuple[FakeRegistry, str]) -> None:
        """A chain of indexes deeper than the limit ends in invalid_response, never a hang."""
        registry, url = fake
        chain = shapes.index([(shapes.image("deep"), None)])
        for _ in range(9):
            chain = shapes.index([(chain, None)])
        load(registry, chain, "v1")
        result = await probe(url)
        assert result.outcome is Outcome.INVALID_RESPONSE
        (failed,) = result.failures
        assert failed.evidence is not None
        assert failed.evidence.detail == "indexes nested more than 8 deep; not followed"

    async def test_a_manifest_listed_twice_is_pulled_once(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        registry, url = fake
        amd = shapes.image("amd")
        load(registry, shapes.index([(amd, None), (shapes.index([(amd, None)]), None)]), "v1")
        result = await probe(url)
        assert result.ok
        fetched = [p for _, p, _ in registry.requests if p.endswith(f"/manifests/{amd.digest}")]
        assert len(fetched) == 1

    async def test_attestations_are_skipped_and_counted(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        registry, url = fake
        amd = shapes.image("amd")
        statement, marks = shapes.attestation(amd)
        unknown = {"os": "unknown", "architecture": "unknown"}
        entries = [
            amd.descriptor(platform={"os": "linux", "architecture": "amd64"}),
            statement.descriptor(platform=unknown, **marks),
        ]
        body = json.dumps({"schemaVersion": 2, "mediaType": shapes.OCI_INDEX, "manifests": entries})
        top = shapes.Manifest(body.encode(), shapes.OCI_INDEX, children=(amd, statement))
        load(registry, top, "v1")
        result = await probe(url)
        assert result.ok, result
        (skipped,) = result.skipped
        assert skipped.digest == statement.digest
        assert skipped.reason is SkipReason.ATTESTATION
        assert statement.digest not in {b.digest for b in result.blobs}

    @pytest.mark.parametrize("only_attestations", [True, False])
    async def test_a_pull_that_verified_nothing_is_never_ok(
        self, fake: tuple[FakeRegistry, str], only_attestations: bool
    ) -> None:
        """An index of attestations alone, or of nothing, is nothing_verified with the reason."""
        registry, url = fake
        amd = shapes.image("amd")
        statement, marks = shapes.attestation(amd)
        entries = [statement.descriptor(**marks)] if only_attestations else []
        body = json.dumps({"schemaVersion": 2, "mediaType": shapes.OCI_INDEX, "manifests": entries})
        top = shapes.Manifest(body.encode(), shapes.OCI_INDEX, children=(statement,))
        load(registry, top, "v1")
        result = await probe(url)
        assert result.outcome is Outcome.NOTHING_VERIFIED
        assert not result.ok
        assert result.evidence is not None
        expected = "nothing verified: the index names no image manifest to pull"
        if only_attestations:
            expected += " (1 attestation manifest(s) skipped)"
        assert result.evidence.detail == expected
        assert classify(result) is Kind.OTHER


def _referrer_descriptor(manifest: shapes.Manifest, artifact_type: str) -> dict[str, object]:
    return manifest.descriptor(artifactType=artifact_type)


class TestReferrers:
    async def test_referrers_api(self, fake: tuple[FakeRegistry, str]) -> None:
        """The OCI 1.1 API lists a signature and an SBOM; each is pulled and verified, and the
        requirements they meet say so."""
        registry, url = fake
        subject = shapes.image("signed")
        load(registry, subject, "v1")
        signature = shapes.artifact(
            "sig", artifact_type=shapes.COSIGN_SIG_ARTIFACT, subject=subject
        )
        sbom = shapes.artifact("sbom", artifact_type=shapes.SPDX, subject=subject)
        load(registry, signature)
        load(registry, sbom)
        registry.referrers = {
            subject.digest: [
                _referrer_descriptor(signature, shapes.COSIGN_SIG_ARTIFACT),
                _referrer_descriptor(sbom, shapes.SPDX),
            ]
        }
        result = await probe(url, referrers={"require": ["signature", shapes.SPDX]})
        assert result.ok, result
        assert result.requirements == (("signature", True), (shapes.SPDX, True))
        # In an order that does not depend on timing: by source, then artifact type.
        assert [(r.artifact_type, r.found_via) for r in result.referrers] == [
            (shapes.SPDX, "api"),
            (shapes.COSIGN_SIG_ARTIFACT, "api"),
        ]
        referred = {b.digest for b in result.blobs if b.referrer is not None}
        assert referred == {b.digest for b in (*signature.blobs, *sbom.blobs)}

    async def test_tag_schema_fallback_and_cosign_tags(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """Without the API (404), the `sha256-<hex>` index is read; cosign's `.sig` tag is
        tried too; both meet their requirements."""
        registry, url = fake
        subject = shapes.image("signed")
        load(registry, subject, "v1")
        sbom = shapes.artifact("sbom", artifact_type=shapes.SPDX, subject=subject)
        load(registry, sbom)
        load(registry, shapes.referrers_index([sbom]), subject.digest.replace(":", "-"))
        signature = shapes.cosign_signature(subject)
        load(registry, signature, shapes.cosign_tag(subject, "sig"))
        result = await probe(url, referrers={"require": ["signature", "sbom"]})
        assert result.ok, result
        assert result.requirements == (("signature", True), ("sbom", True))
        assert sorted(str(r.found_via) for r in result.referrers) == ["cosign_tag", "tag_schema"]
        assert result.verified_blobs == 3 + 2 + 2

    async def test_a_missing_requirement_is_confirmed_then_fails(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """A required signature that is gone is referrer_missing, after a second listing."""
        registry, url = fake
        subject = shapes.image("unsigned")
        load(registry, subject, "v1")
        result = await probe(url, referrers={"require": ["signature"]})
        assert result.outcome is Outcome.REFERRER_MISSING
        assert result.requirements == (("signature", False),)
        (missing,) = result.failures
        assert missing.evidence is not None
        assert missing.evidence.detail == (
            "no referrer of the image is a signature (0 found, listed again after 0.01s)"
        )
        sig_tag = shapes.cosign_tag(subject, "sig")
        tried = [p for _, p, _ in registry.requests if p.endswith(f"/manifests/{sig_tag}")]
        assert len(tried) == 2

    async def test_a_lost_signature_blob_pages_like_a_layer(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        registry, url = fake
        subject = shapes.image("signed")
        load(registry, subject, "v1")
        signature = shapes.cosign_signature(subject)
        load(registry, signature, shapes.cosign_tag(subject, "sig"))
        lose(registry, signature.blobs[1])
        result = await probe(url, referrers={"require": ["signature"]})
        assert result.outcome is Outcome.BLOB_UNKNOWN
        (lost,) = result.failures
        assert lost.digest == signature.blobs[1].digest
        assert lost.referrer == signature.digest
        assert result.blobs_unknown == 1
        assert result.requirements == (("signature", True),)

    async def test_an_unlistable_registry_leaves_requirements_unknown(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """A 503 on the referrers API fails the pull with that answer; requirements that cosign's
        tags did not meet are unknown, not missing."""
        registry, url = fake
        subject = shapes.image("signed")
        load(registry, subject, "v1")

        async def unavailable(request: web.Request) -> web.Response:
            return oci_error(503, "UNAVAILABLE", "try later")

        registry.faults[f"/v2/{REPO}/referrers/{subject.digest}"] = unavailable
        result = await probe(url, referrers={"require": ["sbom"]})
        assert result.outcome is Outcome.UNAVAILABLE
        assert result.requirements == (("sbom", None),)
        assert [r.outcome for r in result.referrers] == [Outcome.UNAVAILABLE]

    async def test_every_page_of_the_referrers_api(self, fake: tuple[FakeRegistry, str]) -> None:
        """The API's answer is followed through its Link header, page after page."""
        registry, url = fake
        subject = shapes.image("signed")
        load(registry, subject, "v1")
        signature = shapes.artifact("sig", artifact_type=shapes.COSIGN_SIG_ARTIFACT)
        sbom = shapes.artifact("sbom", artifact_type=shapes.SPDX)
        load(registry, signature)
        load(registry, sbom)
        pages = {
            "": (signature, shapes.COSIGN_SIG_ARTIFACT, {"Link": '<?last=1>; rel="next"'}),
            "1": (sbom, shapes.SPDX, {}),
        }

        async def paged(request: web.Request) -> web.Response:
            manifest, kind, headers = pages[request.query.get("last", "")]
            listed = {
                "schemaVersion": 2,
                "mediaType": shapes.OCI_INDEX,
                "manifests": [_referrer_descriptor(manifest, kind)],
            }
            return web.json_response(listed, content_type=shapes.OCI_INDEX, headers=headers)

        registry.faults[f"/v2/{REPO}/referrers/{subject.digest}"] = paged
        result = await probe(url, referrers={"require": ["signature", "sbom"]})
        assert result.ok, result
        assert {r.digest for r in result.referrers} == {signature.digest, sbom.digest}

    async def test_a_stalled_referrer_times_out_with_what_was_verified(
        self, fake: tuple[FakeRegistry, str]
    ) -> None:
        """A referrer manifest that never comes ends the pull as a timeout during the referrers,
        that referrer marked, the image's own blobs kept verified."""
        registry, url = fake
        subject = shapes.image("signed")
        load(registry, subject, "v1")
        release = asyncio.Event()

        async def stall(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(status=404)

        tag = shapes.cosign_tag(subject, "sig")
        registry.faults[f"/v2/{REPO}/manifests/{tag}"] = stall
        try:
            result = await probe(url, {"timeout": "500ms"}, referrers={})
        finally:
            release.set()
        assert result.outcome is Outcome.TIMEOUT
        assert result.evidence is not None
        assert result.evidence.detail == (
            "the pull took longer than its timeout of 0.5s (during referrers)"
        )
        assert result.verified_blobs == 3
        assert [(r.outcome, r.found_via) for r in result.referrers] == [
            (Outcome.TIMEOUT, "cosign_tag")
        ]
        # Cut off midway, the referrers were not all seen: their gauges must keep their values.
        assert not result.referrers_checked

    async def test_off_by_default(self, fake: tuple[FakeRegistry, str]) -> None:
        registry, url = fake
        load(registry, shapes.image("plain"), "v1")
        result = await probe(url)
        assert result.ok
        assert not result.referrers_checked
        assert not any("/referrers/" in p or "sha256-" in p for _, p, _ in registry.requests)


class TestRecheckDelay:
    @pytest.mark.parametrize("what", ["blob", "manifest"])
    async def test_the_confirming_fetch_waits_for_recheck_delay(
        self, fake: tuple[FakeRegistry, str], what: str
    ) -> None:
        """The second fetch of a lost blob or manifest comes at least recheck_delay after the
        first answer, never at once."""
        registry, url = fake
        manifest = shapes.image("lost")
        load(registry, manifest, "v1")
        if what == "blob":
            lose(registry, manifest.blobs[1])
            path = f"/v2/{REPO}/blobs/{manifest.blobs[1].digest}"
        else:
            del registry.manifests[REPO, "v1"]
            path = f"/v2/{REPO}/manifests/v1"
        result = await probe(url, {"recheck_delay": "300ms"})
        assert result.outcome.is_data_loss
        times = [
            t
            for (_, p, _), t in zip(registry.requests, registry.arrivals, strict=True)
            if p == path
        ]
        assert len(times) == 2
        assert times[1] - times[0] >= 0.3
