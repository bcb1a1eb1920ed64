"""The probe against a fake registry: digest and size checks, outcomes, rechecks, redirects."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canary.budget import BlobBudget
from canary.config import Budget, Target
from canary.probe import probe_image, pull_image
from canary.registry.client import RegistryClient
from canary.registry.errors import outcome_for_response, parse_error_body, safe_url
from canary.results import Hop, ImageResult, Outcome, PublishedStatus
from tests.conftest import catalog, to_config
from tests.fake_registry import FakeRegistry, digest, oci_error

BLOBS = web.AppKey("blobs", dict[str, bytes])
LAYER_A = b"layer-a" * 1000
LAYER_B = b"layer-b" * 3000


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeRegistry, TestServer]]:
    registry = FakeRegistry()
    server = TestServer(registry.app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield registry, server
    finally:
        await server.close()


def target_for(url: str, environment: dict[str, Any] | None = None, **image: Any) -> Target:
    document = catalog(
        url, [{"repository": "canary/app", "tag": "v1", **image}], **(environment or {})
    )
    document["defaults"] = {"timeout": "5s", "recheck_delay": "10ms"}
    return next(to_config(document).targets())


async def probe(url: str, environment: dict[str, Any] | None = None, **image: Any) -> ImageResult:
    target = target_for(url, environment, **image)
    async with RegistryClient(target.environment) as client:
        return await probe_image(client, target)


def base(server: TestServer) -> str:
    return f"http://127.0.0.1:{server.port}"


class TestErrorMapping:
    @pytest.mark.parametrize(
        ("status", "body", "subject", "outcome"),
        [
            (
                404,
                b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}',
                "blob",
                Outcome.BLOB_UNKNOWN,
            ),
            (
                404,
                b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}',
                "manifest",
                Outcome.MANIFEST_UNKNOWN,
            ),
            (404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}', "manifest", Outcome.NAME_UNKNOWN),
            (
                400,
                b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}',
                "manifest",
                Outcome.MANIFEST_BLOB_UNKNOWN,
            ),
            (401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', "blob", Outcome.UNAUTHORIZED),
            (403, b'{"errors":[{"code":"DENIED"}]}', "blob", Outcome.DENIED),
            (429, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}', "blob", Outcome.TOOMANYREQUESTS),
            (503, b'{"errors":[{"code":"UNAVAILABLE"}]}', "blob", Outcome.UNAVAILABLE),
            (500, b'{"errors":[{"code":"UNKNOWN"}]}', "blob", Outcome.HTTP_5XX),
            (404, None, "blob", Outcome.BLOB_UNKNOWN),
            (404, None, "manifest", Outcome.MANIFEST_UNKNOWN),
            (404, None, "other", Outcome.HTTP_4XX),
            (401, None, "blob", Outcome.UNAUTHORIZED),
            (403, b"<html>forbidden</html>", "blob", Outcome.DENIED),
            (429, None, "manifest", Outcome.TOOMANYREQUESTS),
            (418, None, "blob", Outcome.HTTP_4XX),
            (502, b"bad gateway", "blob", Outcome.HTTP_5XX),
            (503, None, "blob", Outcome.HTTP_5XX),
            # The body's code decides even when the status disagrees with it.
            (500, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', "blob", Outcome.BLOB_UNKNOWN),
        ],
    )
    def test_outcome(self, status: int, body: bytes | None, subject: Any, outcome: Outcome) -> None:
        """The OCI code decides when present; otherwise the status and what was asked for."""
        fetch = outcome_for_response(
            status, {}, body, subject=subject, hop=Hop.REGISTRY, url="http://r/v2/x"
        )
        assert fetch.outcome is outcome
        assert fetch.status == status

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"null",
            b"[]",
            b'{"errors": "x"}',
            b'{"errors": [1]}',
            b"\xff\xfe",
            b'{"errors": []}',
        ],
    )
    def test_malformed_error_bodies(self, body: bytes) -> None:
        """Bodies that are not OCI error documents yield no code rather than an exception."""
        assert parse_error_body(body) == (None, None, None)

    def test_evidence_keeps_request_id_and_drops_url_secrets(self) -> None:
        """Evidence keeps the correlation header and strips user info and signed query strings."""
        fetch = outcome_for_response(
            404,
            {"X-Amz-Request-Id": "abc123"},
            json.dumps(
                {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown", "detail": "x"}]}
            ).encode(),
            subject="blob",
            hop=Hop.STORAGE,
            url="https://user:pw@cdn.example.com/blobs/x?X-Amz-Signature=secret&Expires=1",
        )
        assert fetch.evidence is not None
        assert fetch.evidence.request_id == "abc123"
        assert fetch.evidence.url == "https://cdn.example.com/blobs/x"
        assert fetch.evidence.code == "BLOB_UNKNOWN"
        assert safe_url("http://[::1]:5000/v2/?a=b") == "http://[::1]:5000/v2/"


class TestPull:
    async def test_verified_pull(self, fake: tuple[FakeRegistry, TestServer]) -> None:
        """A healthy image verifies manifest, config and every layer, and reads `created`."""
        registry, server = fake
        image = registry.add_image("canary/app", "v1", [LAYER_A, LAYER_B])
        result = await probe(base(server), digest=image.digest, published="2023-05-01T12:00:00Z")
        assert result.ok
        assert result.manifests[0].digest == image.digest
        assert [b.digest for b in result.blobs] == image.blob_digests
        assert [b.bytes for b in result.blobs] == [len(image.config), len(LAYER_A), len(LAYER_B)]
        assert {b.platform for b in result.blobs} == {"linux/amd64"}
        assert result.published[0].status is PublishedStatus.OK
        assert result.published[0].timestamp is not None
        assert result.published[0].timestamp.year == 2023
        assert result.blobs[1].request_id == f"req-{digest(LAYER_A)[7:19]}"

    async def test_corrupted_layer_is_digest_mismatch(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """Bytes that do not hash to the descriptor's digest are a confirmed digest_mismatch."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        registry.blobs[digest(LAYER_A)] = b"X" * len(LAYER_A)
        result = await probe(base(server))
        assert result.outcome is Outcome.DIGEST_MISMATCH
        layer = result.blobs[1]
        assert (layer.outcome, layer.first_outcome) == (
            Outcome.DIGEST_MISMATCH,
            Outcome.DIGEST_MISMATCH,
        )
        gets = [r for r in registry.requests if r[1].endswith(digest(LAYER_A))]
        assert len(gets) == 2  # fetched again before being reported

    async def test_descriptor_size_wrong_is_size_mismatch(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """A descriptor whose size disagrees with what the registry serves is size_mismatch."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A], size_override=len(LAYER_A) + 5)
        for mode in ("get", "head", "range"):
            result = await probe(base(server), blob_check=mode)
            assert result.blobs[1].outcome is Outcome.SIZE_MISMATCH, mode

    async def test_transient_miss_recovers_on_recheck(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """A 404 that is gone on the second fetch ends ok but keeps the first outcome."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        path = f"/v2/canary/app/blobs/{digest(LAYER_A)}"
        misses = iter([oci_error(404, "BLOB_UNKNOWN", "blob unknown")])

        async def once(request: web.Request) -> web.StreamResponse | None:
            return next(misses, None)

        registry.faults[path] = once
        result = await probe(base(server))
        assert result.ok
        assert (result.blobs[1].outcome, result.blobs[1].first_outcome) == (
            Outcome.OK,
            Outcome.BLOB_UNKNOWN,
        )

    async def test_unavailable_is_not_rechecked(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """A 503 is reported at once as unavailable: only data-loss outcomes are re-fetched."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        path = f"/v2/canary/app/blobs/{digest(LAYER_A)}"

        async def unavailable(request: web.Request) -> web.StreamResponse:
            return oci_error(503, "UNAVAILABLE", "try later")

        registry.faults[path] = unavailable
        result = await probe(base(server))
        assert result.outcome is Outcome.UNAVAILABLE
        assert sum(1 for r in registry.requests if r[1] == path) == 1

    async def test_head_404_is_blob_unknown(self, fake: tuple[FakeRegistry, TestServer]) -> None:
        """In head mode a body-less 404 on a layer is blob_unknown, and the config is still read."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        del registry.blobs[digest(LAYER_A)]
        result = await probe(base(server), blob_check="head")
        assert [b.outcome for b in result.blobs] == [Outcome.OK, Outcome.BLOB_UNKNOWN]
        assert result.published[0].status is PublishedStatus.OK
        methods = {r[0] for r in registry.requests if r[1].endswith(digest(LAYER_A))}
        assert methods == {"HEAD"}

    async def test_range_mode_reads_first_bytes(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """Range mode asks for the first KiB and accepts a 206."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_B])
        result = await probe(base(server), blob_check="range")
        assert result.ok
        assert result.blobs[1].status == 206
        assert result.blobs[1].bytes == 1024
        ranges = [r[2].get("Range") for r in registry.requests if r[1].endswith(digest(LAYER_B))]
        assert ranges == ["bytes=0-1023"]

    async def test_manifest_digest_header_mismatch(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """A manifest body that does not hash to Docker-Content-Digest is digest_mismatch."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        media_type, body = registry.manifests["canary/app", "v1"]

        async def lying(request: web.Request) -> web.StreamResponse:
            return web.Response(
                body=body,
                content_type=media_type,
                headers={"Docker-Content-Digest": digest(b"other")},
            )

        registry.faults["/v2/canary/app/manifests/v1"] = lying
        result = await probe(base(server))
        assert result.outcome is Outcome.DIGEST_MISMATCH
        assert result.manifests[0].first_outcome is Outcome.DIGEST_MISMATCH
        assert result.blobs == ()

    async def test_pin_no_longer_matches(self, fake: tuple[FakeRegistry, TestServer]) -> None:
        """A tag that now points elsewhere than its pin is a digest_mismatch naming the pin."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        result = await probe(base(server), digest="sha256:" + "a" * 64)
        assert result.outcome is Outcome.DIGEST_MISMATCH
        evidence = result.manifests[0].evidence
        assert evidence is not None
        assert "pinned digest" in evidence.detail

    @pytest.mark.parametrize("chunked", [False, True])
    async def test_oversized_manifest_refused(
        self, fake: tuple[FakeRegistry, TestServer], chunked: bool
    ) -> None:
        """A manifest over 4 MiB is refused whether or not it announces its length."""
        registry, server = fake
        huge = b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}"

        async def oversized(request: web.Request) -> web.StreamResponse:
            if not chunked:
                return web.Response(body=huge, content_type="application/json")
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(huge), 1 << 20):
                await response.write(huge[start : start + (1 << 20)])
            await response.write_eof()
            return response

        registry.faults["/v2/canary/app/manifests/v1"] = oversized
        result = await probe(base(server))
        assert result.outcome is Outcome.INVALID_RESPONSE
        evidence = result.manifests[0].evidence
        assert evidence is not None
        assert "4 MiB" in evidence.detail

    async def test_missing_created_and_published_pin(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """No `created` is a missing date; a different `created` than the pin is a mismatch."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A], created=None)
        result = await probe(base(server))
        assert result.ok
        assert result.published[0].status is PublishedStatus.MISSING
        registry.add_image("canary/app", "v1", [LAYER_A], created="2024-01-01T00:00:00.123456789Z")
        result = await probe(base(server), published="2023-05-01T12:00:00Z")
        assert result.ok
        assert result.published[0].status is PublishedStatus.MISMATCH
        assert result.published[0].timestamp is not None
        assert result.published[0].timestamp.year == 2024

    async def test_timeout_is_an_outcome(self, fake: tuple[FakeRegistry, TestServer]) -> None:
        """A blob that never finishes makes the image time out, with the blob marked timeout."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        release = asyncio.Event()

        async def stall(request: web.Request) -> web.StreamResponse:
            await asyncio.wait_for(release.wait(), 10)
            return web.Response(status=500)

        registry.faults[f"/v2/canary/app/blobs/{digest(LAYER_A)}"] = stall
        target = target_for(base(server))
        document = catalog(
            base(server), [{"repository": "canary/app", "tag": "v1", "timeout": "300ms"}]
        )
        target = next(to_config(document).targets())
        try:
            async with RegistryClient(target.environment) as client:
                result = await probe_image(client, target)
        finally:
            release.set()
        assert result.outcome is Outcome.TIMEOUT
        assert [b.outcome for b in result.blobs] == [Outcome.OK, Outcome.TIMEOUT]
        assert result.evidence is not None
        assert (
            result.evidence.detail == "the pull took longer than its timeout of 0.3s (during blobs)"
        )

    async def test_connection_refused(self) -> None:
        """A registry that is not listening is connection_error, not an exception."""
        from canary.testbed import free_port

        result = await probe(f"http://127.0.0.1:{free_port()}")
        assert result.outcome is Outcome.CONNECTION_ERROR
        assert result.manifests[0].evidence is not None

    async def test_index_platform_selection(self, fake: tuple[FakeRegistry, TestServer]) -> None:
        """An index is followed per platform; attestation entries are skipped; absent ones fail."""
        registry, server = fake
        amd = registry.add_image("canary/app", "amd", [LAYER_A], platform=("linux", "amd64"))
        arm = registry.add_image("canary/app", "arm", [LAYER_B], platform=("linux", "arm64"))
        att = registry.add_image(
            "canary/app", "att", [b"attestation"], platform=("unknown", "unknown")
        )
        registry.add_index(
            "canary/app",
            "v1",
            [("linux/amd64", amd), ("linux/arm64", arm), ("unknown/unknown", att)],
        )
        result = await probe(base(server))
        assert result.ok
        assert [m.platform for m in result.manifests] == [None, "linux/amd64", "linux/arm64"]
        assert {(b.platform, b.kind) for b in result.blobs} == {
            ("linux/amd64", "config"),
            ("linux/amd64", "layer"),
            ("linux/arm64", "config"),
            ("linux/arm64", "layer"),
        }
        only_arm = await probe(base(server), platforms=["linux/arm64"])
        assert only_arm.ok
        assert {b.platform for b in only_arm.blobs} == {"linux/arm64"}
        absent = await probe(base(server), platforms=["linux/s390x"])
        assert absent.outcome is Outcome.MANIFEST_UNKNOWN
        assert absent.manifests[-1].platform == "linux/s390x"


BUDGET = {"bytes_per_hour": "1GiB", "full_verify_within": "24h"}


async def pull_under(url: str, budget: BlobBudget, **image: Any) -> ImageResult:
    document = catalog(url, [{"repository": "canary/app", "tag": "v1", **image}])
    document["defaults"] = {"timeout": "5s", "recheck_delay": "10ms", "budget": BUDGET}
    target = next(to_config(document).targets())
    async with RegistryClient(target.environment) as client:
        return await (await pull_image(client, target, budget=budget)).result()


def fresh_budget() -> BlobBudget:
    return BlobBudget(Budget.model_validate(BUDGET), hold=120.0, now=time.time())


class TestBudgetFeeding:
    async def test_a_budgeted_pull_downloads_what_it_is_granted(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """Under blob_check: budget, granted layers are downloaded and verified, and the pull
        tells the budget the image's layers."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A, LAYER_B])
        budget = fresh_budget()
        result = await pull_under(base(server), budget, blob_check="budget")
        assert result.ok
        assert [b.bytes for b in result.blobs if b.kind == "layer"] == [len(LAYER_A), len(LAYER_B)]
        assert (budget.layers, budget.verified_bytes) == (2, len(LAYER_A) + len(LAYER_B))

    async def test_other_blob_checks_never_feed_the_budget(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """An image of another blob check in a budgeted environment neither takes nor settles:
        its layers are not the budget's to rotate."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])
        budget = fresh_budget()
        assert (await pull_under(base(server), budget, blob_check="head")).ok
        assert (budget.layers, budget.catalog_bytes) == (0, 0)

    async def test_a_pull_that_stops_early_keeps_the_image_layers(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """A pull whose platform manifest fails does not settle what it saw, so the other
        platform's layers keep their verification history."""
        registry, server = fake
        amd = registry.add_image("canary/app", "amd", [LAYER_A], platform=("linux", "amd64"))
        arm = registry.add_image("canary/app", "arm", [LAYER_B], platform=("linux", "arm64"))
        registry.add_index("canary/app", "v1", [("linux/amd64", amd), ("linux/arm64", arm)])
        budget = fresh_budget()
        assert (await pull_under(base(server), budget, blob_check="budget")).ok
        assert budget.layers == 2

        async def unavailable(request: web.Request) -> web.StreamResponse:
            return oci_error(503, "UNAVAILABLE", "try later")

        registry.faults[f"/v2/canary/app/manifests/{arm.digest}"] = unavailable
        broken = await pull_under(base(server), budget, blob_check="budget")
        assert broken.outcome is Outcome.UNAVAILABLE
        assert (budget.layers, budget.catalog_bytes) == (2, len(LAYER_A) + len(LAYER_B))


@pytest.fixture
async def storage() -> AsyncIterator[
    tuple[list[dict[str, str]], Callable[[int], None], TestServer]
]:
    """A second loopback server standing in for object storage; records request headers."""
    seen: list[dict[str, str]] = []
    status = {"code": 200}

    async def serve(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if status["code"] != 200:
            return web.Response(
                status=status["code"],
                text="<Error>SlowDown</Error>",
                headers={"X-Amz-Request-Id": "storage-req-1"},
            )
        return web.Response(body=request.app[BLOBS][request.path.rsplit("/", 1)[1]])

    app = web.Application()
    app[BLOBS] = {}
    app.router.add_get("/{tail:.*}", serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()

    def set_status(code: int) -> None:
        status["code"] = code

    try:
        yield seen, set_status, server
    finally:
        await server.close()


class TestRedirects:
    async def test_storage_never_sees_authorization(
        self, fake: tuple[FakeRegistry, TestServer], storage: Any
    ) -> None:
        """Blobs redirected to storage are verified, and the registry's credentials stay behind."""
        registry, server = fake
        seen, set_status, storage_server = storage
        registry.basic_auth = "Basic " + base64.b64encode(b"canary:s3cret").decode()
        image = registry.add_image("canary/app", "v1", [LAYER_A])
        storage_server.app[BLOBS].update({d[7:]: registry.blobs[d] for d in image.blob_digests})

        async def redirect(request: web.Request) -> web.StreamResponse | None:
            if request.headers.get("Authorization") != registry.basic_auth:
                return None  # let the normal 401 challenge happen
            name = request.path.rsplit(":", 1)[1]
            raise web.HTTPTemporaryRedirect(
                f"http://127.0.0.1:{storage_server.port}/data/{name}?sig=SECRET"
            )

        for blob in image.blob_digests:
            registry.faults[f"/v2/canary/app/blobs/{blob}"] = redirect
        env = {"auth": {"username": "canary", "password_env": "PW"}}
        document = catalog(base(server), [{"repository": "canary/app", "tag": "v1"}], **env)
        target = next(to_config(document, {"PW": "s3cret"}).targets())
        async with RegistryClient(target.environment) as client:
            result = await probe_image(client, target)
        assert result.ok, result.to_dict()
        assert {b.hop for b in result.blobs} == {Hop.STORAGE}
        assert len(seen) == 2
        assert all("Authorization" not in headers for headers in seen)

        set_status(503)
        async with RegistryClient(target.environment) as client:
            failed = await probe_image(client, target)
        layer = failed.blobs[1]
        assert (layer.outcome, layer.hop, layer.status) == (Outcome.HTTP_5XX, Hop.STORAGE, 503)
        assert layer.request_id == "storage-req-1"
        assert layer.evidence is not None
        assert "SECRET" not in json.dumps(failed.to_dict())

    async def test_non_http_redirect_and_loops_refused(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """A redirect to another scheme, or a redirect loop, is invalid_response, not followed."""
        registry, server = fake
        image = registry.add_image("canary/app", "v1", [LAYER_A, LAYER_B])
        layer_a, layer_b = image.blob_digests[1:]

        async def to_file(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("file:///etc/passwd")

        async def loop(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(request.path)

        registry.faults[f"/v2/canary/app/blobs/{layer_a}"] = to_file
        registry.faults[f"/v2/canary/app/blobs/{layer_b}"] = loop
        result = await probe(base(server))
        outcomes = {b.digest: b for b in result.blobs}
        assert outcomes[layer_a].outcome is Outcome.INVALID_RESPONSE
        assert outcomes[layer_b].outcome is Outcome.INVALID_RESPONSE
        assert outcomes[layer_b].evidence is not None
        assert "redirects" in outcomes[layer_b].evidence.detail


class TestBoundary:
    async def test_unexpected_error_is_an_outcome(
        self, fake: tuple[FakeRegistry, TestServer], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An exception nobody foresaw ends that pull as invalid_response instead of escaping."""
        registry, server = fake
        registry.add_image("canary/app", "v1", [LAYER_A])

        def broken(body: bytes, content_type: str | None) -> None:
            raise RuntimeError("parser exploded")

        monkeypatch.setattr("canary.pull.walk.parse_manifest", broken)
        result = await probe(base(server))
        assert result.outcome is Outcome.INVALID_RESPONSE
        assert result.evidence is not None
        assert result.evidence.detail == "unexpected error: RuntimeError"


class TestPublishedOfIndex:
    async def test_first_platform_in_index_order_wins(
        self, fake: tuple[FakeRegistry, TestServer]
    ) -> None:
        """The date comes from the first platform in index order, however the downloads race."""
        registry, server = fake
        amd = registry.add_image("canary/app", "amd", [LAYER_A], created="2020-01-01T00:00:00Z")
        arm = registry.add_image(
            "canary/app",
            "arm",
            [LAYER_B],
            created="2020-01-01T00:00:30Z",
            platform=("linux", "arm64"),
        )
        registry.add_index("canary/app", "v1", [("linux/amd64", amd), ("linux/arm64", arm)])
        amd_config = f"/v2/canary/app/blobs/{digest(amd.config)}"

        async def slow(request: web.Request) -> None:
            await asyncio.sleep(0.2)  # arm64's config arrives first

        registry.faults[amd_config] = slow
        result = await probe(base(server), published="2020-01-01T00:00:00Z")
        assert result.published[0].to_dict()["timestamp"] == "2020-01-01T00:00:00Z"
        assert result.published[0].status is PublishedStatus.OK

        async def gone(request: web.Request) -> web.StreamResponse:
            return oci_error(404, "BLOB_UNKNOWN", "blob unknown")

        registry.faults[amd_config] = gone
        partial = await probe(base(server))
        assert partial.outcome is Outcome.BLOB_UNKNOWN
        assert partial.published[0].to_dict()["timestamp"] == "2020-01-01T00:00:30Z"
