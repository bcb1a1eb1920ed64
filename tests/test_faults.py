"""The probe against the real registry behind a fault-injecting proxy: every fault ends in the
outcome the README promises, with the hop, status and evidence that point at it, while another
environment probed in the same run carries on unharmed."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from canary.config import Config
from canary.faults import Fault, FaultProxy
from canary.probe import probe_catalog
from canary.registry.client import RegistryClient
from canary.registry.media import OCI_MANIFEST
from canary.results import Hop, ImageResult, Outcome
from canary.seed import seed
from canary.testbed import LocalRegistry, TokenAuth, free_port, start_registry
from tests.conftest import catalog, seed_images, to_config, write_config
from tests.token_issuer import TokenIssuer

pytestmark = pytest.mark.registry

TIMEOUT = 2.0
APP = "faults/app"
MULTI = "faults/multi"
IMAGES: list[dict[str, Any]] = [
    {"repository": APP, "tag": "v1"},
    {"repository": MULTI, "tag": "v1", "platforms": ["linux/amd64", "linux/arm64"]},
]
SEED_ARGS = ("--layers", "2", "--layer-size", "64KiB")
USER, PASSWORD, PASSWORD_ENV = "canary", "faults-pw", "CANARY_FAULTS_PASSWORD"
LYING = re.compile(r"Content-Length is (?P<length>\d+), the descriptor says (?P<size>\d+)")
OCI_ERROR = '{{"errors":[{{"code":"{code}","message":"{message}"}}]}}'


def oci_error(code: str, message: str = "injected") -> bytes:
    return OCI_ERROR.format(code=code, message=message).encode()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """One anonymous registry for the module, seeded with IMAGES (they are only read)."""
    root = tmp_path_factory.mktemp("faults")
    with start_registry(root / "registry") as running:
        seed_images(write_config(root, catalog(running.url, IMAGES)), *SEED_ARGS)
        yield running


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as running:
        yield running


def two_environments(
    faulty_url: str,
    healthy_url: str,
    *,
    timeout: float = TIMEOUT,
    images: list[dict[str, Any]] | None = None,
    faulty: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    **defaults: Any,
) -> Config:
    """`faulty` (through the proxy) and `healthy` (straight to a registry), the same images."""
    document = {
        "defaults": {"timeout": f"{timeout}s", "recheck_delay": "50ms", **defaults},
        "environments": [
            {"name": "faulty", "url": faulty_url, **(faulty or {})},
            {"name": "healthy", "url": healthy_url},
        ],
        "images": images or IMAGES,
    }
    return to_config(document, environ)


@dataclass
class Run:
    """One probe of both environments: the faulty results by repository, and how long it took."""

    faulty: dict[str, ImageResult]  # the IMAGES (tag v1) by repository
    every_faulty: list[ImageResult]
    healthy: list[ImageResult]
    order: list[tuple[str, bool]]  # (environment, ok) of each result as it was reported
    seconds: float

    @property
    def app(self) -> ImageResult:
        return self.faulty[APP]


def probe(config: Config, timeout: float = TIMEOUT) -> Run:
    """Probe both environments once; the healthy one must have verified everything in time."""
    order: list[tuple[str, bool]] = []
    started = time.monotonic()
    results = asyncio.run(
        probe_catalog(config, on_result=lambda r: order.append((r.environment, r.ok)))
    )
    seconds = time.monotonic() - started
    healthy = [r for r in results if r.environment == "healthy"]
    assert healthy, "the healthy environment was not probed"
    for result in healthy:
        assert result.ok, json.dumps(result.to_dict(), indent=1)
        assert result.duration_seconds < timeout, result.duration_seconds
    # Never a hang: a fault costs at most the pull's timeout (and a recheck).
    assert seconds < timeout + 1.5, seconds
    every_faulty = [r for r in results if r.environment == "faulty"]
    faulty = {r.repository: r for r in every_faulty if r.tag == "v1"}
    return Run(faulty, every_faulty, healthy, order, seconds)


def healthy_first(run: Run) -> None:
    """The healthy pulls were all reported before the first failed one had waited out its fault."""
    first_failure = run.order.index(("faulty", False))
    assert ("healthy", True) not in run.order[first_failure:], run.order


def dump(result: ImageResult) -> str:
    return json.dumps(result.to_dict(), indent=1)


class TestProxy:
    def test_forwards_everything_unchanged(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """With no fault injected every pull through the proxy verifies, and none is counted."""
        run = probe(two_environments(proxy.url, registry.url))
        assert all(r.ok for r in run.faulty.values()), run.faulty
        assert proxy.requests >= 1 + 2 + 3 + 6  # /v2/, manifests and blobs of both images
        assert proxy.hits == {}

    def test_pushes_pass_through_and_locations_are_rewritten(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """A seed through the proxy works, and the upload Location it is handed leads back to the
        proxy: both the POST and the PUT of every upload pass through it."""
        proxy.inject(r"/blobs/uploads/", Fault.LATENCY, seconds=0)
        document = catalog(proxy.url, [{"repository": "faults/pushed", "tag": "v1"}])
        config = to_config(document)

        async def push() -> list[str]:
            async with RegistryClient(config.environments[0]) as client:
                return [r.action for r in await seed(client, list(config.images), 2, 4096)]

        assert asyncio.run(push()) == ["pushed"]
        assert proxy.hits == {"latency": 2 * 3}  # config and two layers: POST, then PUT
        direct = to_config(catalog(registry.url, [{"repository": "faults/pushed", "tag": "v1"}]))
        assert asyncio.run(probe_catalog(direct))[0].ok

    def test_rules_latest_wins_times_and_clear(self, proxy: FaultProxy) -> None:
        """The latest matching rule wins, `times` limits a rule, and `clear` removes rules."""
        url = f"{proxy.url}/v2/{APP}/tags/list"

        def status() -> int:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                    code: int = response.status
                    return code
            except urllib.error.HTTPError as exc:
                return exc.code

        proxy.inject(r"/tags/", Fault.STATUS, status=500)
        proxy.inject(r"/tags/list$", Fault.STATUS, status=502, times=2)
        proxy.inject(r"/manifests/", Fault.STATUS, status=503)
        assert [status(), status(), status()] == [502, 502, 500]
        proxy.clear(r"/tags/")
        assert status() == 200
        proxy.clear()
        assert proxy.hits == {"status": 3}
        assert proxy.requests == 4
        with pytest.raises(TypeError):
            proxy.inject("", Fault.LATENCY, second=1)
        with pytest.raises(TypeError):
            proxy.inject("", Fault.REDIRECT_TO)


class TestLatency:
    def test_below_the_timeout_is_ok(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """Every request 0.2 s late, the pulls still finish within their 3 s: ok."""
        proxy.inject(r"", Fault.LATENCY, seconds=0.2)
        run = probe(two_environments(proxy.url, registry.url, timeout=3.0), timeout=3.0)
        assert all(r.ok for r in run.faulty.values()), run.faulty
        assert run.app.duration_seconds >= 0.6  # /v2/, manifest, config, layers: one after another
        assert proxy.hits["latency"] == proxy.requests

    def test_manifest_above_the_timeout(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """A manifest slower than the pull's timeout is a timeout during the manifest, at 2 s."""
        proxy.inject(r"/manifests/", Fault.LATENCY, seconds=30)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.TIMEOUT, dump(result)
            assert result.evidence is not None
            assert result.evidence.detail == (
                "the pull took longer than its timeout of 2s (during manifest)"
            )
            assert [m.outcome for m in result.manifests] == [Outcome.TIMEOUT]
            assert result.blobs == ()
            assert TIMEOUT <= result.duration_seconds < TIMEOUT + 0.5
        healthy_first(run)

    def test_blob_above_the_timeout(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """A layer slower than the pull's timeout is a timeout during the blobs, that layer's."""
        proxy.inject(rf"/{APP}/blobs/", Fault.LATENCY, seconds=30)
        run = probe(two_environments(proxy.url, registry.url))
        assert run.app.outcome is Outcome.TIMEOUT, dump(run.app)
        assert run.app.evidence is not None
        assert run.app.evidence.detail.endswith("(during blobs)")
        assert run.app.manifests[0].outcome is Outcome.OK
        assert [b.outcome for b in run.app.blobs] == [Outcome.TIMEOUT]  # the config, first
        assert run.faulty[MULTI].ok
        healthy_first(run)


class TestBodies:
    def test_stall_mid_body_is_timeout(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """A blob whose body stops halfway is a timeout during the blobs, never a hang."""
        proxy.inject(rf"/{APP}/blobs/", Fault.STALL_BODY, seconds=30)
        run = probe(two_environments(proxy.url, registry.url))
        assert run.app.outcome is Outcome.TIMEOUT, dump(run.app)
        assert run.app.evidence is not None
        assert run.app.evidence.detail.endswith("(during blobs)")
        [stalled] = run.app.blobs
        assert stalled.outcome is Outcome.TIMEOUT
        assert stalled.evidence is not None
        assert stalled.evidence.detail == run.app.evidence.detail
        # The blob's own evidence names the request that stalled, not just the registry.
        assert stalled.evidence.url.endswith(f"/blobs/{stalled.digest}")
        assert proxy.hits == {"stall_body": 1}
        healthy_first(run)

    def test_reset_mid_body_is_connection_error(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """A TCP reset halfway through each blob is connection_error, the body ended early."""
        proxy.inject(r"/blobs/", Fault.RESET_BODY)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.CONNECTION_ERROR, dump(result)
            assert result.blobs
            for blob in result.blobs:
                assert (blob.outcome, blob.first_outcome) == ((Outcome.CONNECTION_ERROR,) * 2)
                assert (blob.hop, blob.status) == (Hop.REGISTRY, None)
                assert blob.evidence is not None
                assert blob.evidence.detail == "the body ended early"

    @pytest.mark.parametrize("fault", [Fault.TRUNCATE, Fault.RESET_BODY, Fault.LYING_LENGTH])
    def test_manifest_body_ended_early(
        self, proxy: FaultProxy, registry: LocalRegistry, fault: Fault
    ) -> None:
        """A manifest body that stops short of its Content-Length is connection_error."""
        proxy.inject(r"/manifests/", fault)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.CONNECTION_ERROR, dump(result)
            [manifest] = result.manifests
            assert manifest.evidence is not None
            assert manifest.evidence.detail == "the body ended early"

    def test_truncated_blob_is_connection_error(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """A blob closed halfway, its Content-Length right, is connection_error (a transport
        failure: nothing says the stored data is short), and is not rechecked."""
        proxy.inject(r"/blobs/", Fault.TRUNCATE)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.CONNECTION_ERROR, dump(result)
            for blob in result.blobs:
                assert (blob.outcome, blob.first_outcome) == ((Outcome.CONNECTION_ERROR,) * 2)
                assert blob.evidence is not None
                assert blob.evidence.detail == "the body ended early"
        # Five blobs (config + layers), each fetched once.
        assert proxy.hits == {"truncate": 3 + 6}

    def test_lying_content_length_is_size_mismatch(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """A blob whose Content-Length exceeds its descriptor's size is size_mismatch, found
        from the header before the body is read, and confirmed on the recheck."""
        proxy.inject(r"/blobs/", Fault.LYING_LENGTH, extra=1024)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.SIZE_MISMATCH, dump(result)
            for blob in result.blobs:
                assert (blob.outcome, blob.first_outcome) == ((Outcome.SIZE_MISMATCH,) * 2)
                assert (blob.hop, blob.status) == (Hop.REGISTRY, 200)
                assert blob.evidence is not None
                claimed = LYING.fullmatch(blob.evidence.detail)
                assert claimed, blob.evidence.detail
                assert int(claimed["length"]) == int(claimed["size"]) + 1024
        assert proxy.hits == {"lying_length": 2 * (3 + 6)}  # each blob fetched, then rechecked

    def test_transient_lying_length_is_rechecked_away(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """A size_mismatch that the recheck no longer sees leaves the pull ok, the first
        outcome kept: a transient fault does not page."""
        proxy.inject(rf"/{APP}/blobs/", Fault.LYING_LENGTH, times=1)
        run = probe(two_environments(proxy.url, registry.url))
        assert run.app.ok, dump(run.app)
        config = run.app.blobs[0]
        assert (config.outcome, config.first_outcome) == (Outcome.OK, Outcome.SIZE_MISMATCH)
        assert all(b.first_outcome is Outcome.OK for b in run.app.blobs[1:])
        assert proxy.hits == {"lying_length": 1}


class TestStatuses:
    @pytest.mark.parametrize(
        ("status", "body", "outcome", "code"),
        [
            (500, None, Outcome.HTTP_5XX, None),
            (500, oci_error("UNKNOWN", "unknown error"), Outcome.HTTP_5XX, "UNKNOWN"),
            (502, None, Outcome.HTTP_5XX, None),
            (502, b"<html><h1>502 Bad Gateway</h1></html>", Outcome.HTTP_5XX, None),
            (503, None, Outcome.HTTP_5XX, None),
            (
                503,
                oci_error("UNAVAILABLE", "service unavailable"),
                Outcome.UNAVAILABLE,
                "UNAVAILABLE",
            ),
        ],
        ids=["500", "500-oci", "502", "502-html", "503", "503-unavailable"],
    )
    def test_manifest_error_status(
        self,
        proxy: FaultProxy,
        registry: LocalRegistry,
        status: int,
        body: bytes | None,
        outcome: Outcome,
        code: str | None,
    ) -> None:
        """A manifest answered with a 5xx is http_5xx, or unavailable for the OCI code."""
        proxy.inject(r"/manifests/", Fault.STATUS, status=status, body=body)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is outcome, dump(result)
            [manifest] = result.manifests
            assert (manifest.status, manifest.hop, manifest.first_outcome) == (
                status,
                Hop.REGISTRY,
                outcome,
            )
            assert manifest.evidence is not None
            assert manifest.evidence.code == code
            assert manifest.evidence.detail.startswith(f"HTTP {status}")

    def test_blob_unavailable(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """Blobs answered 503 UNAVAILABLE are unavailable, each with its status and code."""
        proxy.inject(r"/blobs/", Fault.STATUS, status=503, body=oci_error("UNAVAILABLE"))
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.UNAVAILABLE, dump(result)
            for blob in result.blobs:
                assert (blob.outcome, blob.status) == (Outcome.UNAVAILABLE, 503)

    @pytest.mark.parametrize("where", [r"/manifests/", r"/blobs/"])
    def test_too_many_requests(
        self, proxy: FaultProxy, registry: LocalRegistry, where: str
    ) -> None:
        """A 429 with Retry-After and an OCI TOOMANYREQUESTS body is toomanyrequests."""
        proxy.inject(where, Fault.TOO_MANY_REQUESTS, retry_after=3)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.TOOMANYREQUESTS, dump(result)
            failed = result.failures[0]
            assert (failed.status, failed.first_outcome) == (429, Outcome.TOOMANYREQUESTS)
            assert failed.evidence is not None
            assert failed.evidence.code == "TOOMANYREQUESTS"


class TestRedirects:
    def test_redirect_loop(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """A manifest that redirects to itself forever is invalid_response after 5 redirects."""
        proxy.inject(r"/manifests/", Fault.REDIRECT_LOOP)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.INVALID_RESPONSE, dump(result)
            [manifest] = result.manifests
            assert manifest.evidence is not None
            assert manifest.evidence.detail == "more than 5 redirects"
        assert proxy.hits == {"redirect_loop": 2 * 6}  # the first request and 5 redirects

    def test_redirect_to_unreachable_storage(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """Blobs redirected to a closed loopback port are connection_error at hop storage."""
        port = free_port()  # nothing listens there any more
        proxy.inject(r"/blobs/", Fault.REDIRECT_TO, location=f"http://127.0.0.1:{port}/blob")
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.CONNECTION_ERROR, dump(result)
            for blob in result.blobs:
                assert (blob.outcome, blob.hop, blob.status) == (
                    Outcome.CONNECTION_ERROR,
                    Hop.STORAGE,
                    None,
                )
                assert blob.evidence is not None
                assert blob.evidence.detail.startswith("cannot connect")
                assert blob.evidence.url == f"http://127.0.0.1:{port}/blob"

    def test_redirect_to_slow_storage(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """Blobs redirected to storage that never answers are a timeout during the blobs."""
        with FaultProxy(registry.url) as storage:
            storage.inject(r"", Fault.LATENCY, seconds=30)
            proxy.inject(rf"/{APP}/blobs/", Fault.REDIRECT_TO, location=f"{storage.url}/blob")
            run = probe(two_environments(proxy.url, registry.url))
        assert run.app.outcome is Outcome.TIMEOUT, dump(run.app)
        assert run.app.evidence is not None
        assert run.app.evidence.detail.endswith("(during blobs)")
        assert [b.outcome for b in run.app.blobs] == [Outcome.TIMEOUT]
        assert storage.hits == {"latency": 1}
        assert run.faulty[MULTI].ok
        healthy_first(run)

    def test_slow_storage_timeout_names_the_storage_hop(
        self, proxy: FaultProxy, registry: LocalRegistry
    ) -> None:
        """A blob that timed out at storage says hop storage, as every other storage failure."""
        with FaultProxy(registry.url) as storage:
            storage.inject(r"", Fault.LATENCY, seconds=30)
            proxy.inject(rf"/{APP}/blobs/", Fault.REDIRECT_TO, location=f"{storage.url}/blob")
            run = probe(two_environments(proxy.url, registry.url))
        [blob] = run.app.blobs
        assert blob.outcome is Outcome.TIMEOUT
        assert blob.hop is Hop.STORAGE


class TestManifestBodies:
    @pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
    def test_oversized_manifest_is_refused(
        self, proxy: FaultProxy, registry: LocalRegistry, chunked: bool
    ) -> None:
        """A 5 MiB manifest is refused as invalid_response, whether announced or streamed."""
        proxy.inject(r"/manifests/", Fault.OVERSIZED, chunked=chunked)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.INVALID_RESPONSE, dump(result)
            [manifest] = result.manifests
            assert manifest.status == 200
            assert manifest.evidence is not None
            assert manifest.evidence.detail == "manifest larger than 4 MiB"

    def test_malformed_json_manifest(self, proxy: FaultProxy, registry: LocalRegistry) -> None:
        """A 200 manifest whose body is not JSON is invalid_response."""
        proxy.inject(r"/manifests/", Fault.MALFORMED_JSON)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is Outcome.INVALID_RESPONSE, dump(result)
            [manifest] = result.manifests
            assert manifest.evidence is not None
            assert manifest.evidence.detail.startswith("manifest is not JSON")

    @pytest.mark.parametrize(
        ("where", "outcome"),
        [(r"/manifests/", Outcome.MANIFEST_UNKNOWN), (r"/blobs/", Outcome.BLOB_UNKNOWN)],
        ids=["manifest", "blob"],
    )
    def test_malformed_error_body_on_404(
        self, proxy: FaultProxy, registry: LocalRegistry, where: str, outcome: Outcome
    ) -> None:
        """A 404 whose error body is not JSON is still manifest_unknown or blob_unknown."""
        proxy.inject(where, Fault.MALFORMED_JSON, status=404)
        run = probe(two_environments(proxy.url, registry.url))
        for result in run.faulty.values():
            assert result.outcome is outcome, dump(result)
            failed = result.failures[0]
            assert (failed.status, failed.first_outcome) == (404, outcome)
            assert failed.evidence is not None
            assert (failed.evidence.detail, failed.evidence.code) == ("HTTP 404", None)

    @pytest.mark.parametrize("content_type", ["text/html", "application/json", OCI_MANIFEST])
    def test_wrong_content_type_is_ignored(
        self, proxy: FaultProxy, registry: LocalRegistry, content_type: str
    ) -> None:
        """A wrong Content-Type on manifests and indexes changes nothing: the body's mediaType
        decides, so both images verify."""
        proxy.inject(r"/manifests/", Fault.CONTENT_TYPE, content_type=content_type)
        run = probe(two_environments(proxy.url, registry.url))
        assert all(r.ok for r in run.faulty.values()), run.faulty
        assert proxy.hits == {"content_type": 1 + 3}


def put_manifest(registry: LocalRegistry, repository: str, tag: str, manifest: bytes) -> None:
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        data=manifest,
        method="PUT",
        headers={"Content-Type": OCI_MANIFEST},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        assert response.status == 201


def get_manifest(registry: LocalRegistry, repository: str, tag: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the test registry's loopback URL
        f"{registry.url}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        document: dict[str, Any] = json.loads(response.read())
        return document


class TestDescriptorSize:
    @pytest.mark.parametrize("blob_check", ["get", "range", "head"])
    @pytest.mark.parametrize("delta", [1, -1], ids=["larger", "smaller"])
    def test_wrong_descriptor_size(
        self, proxy: FaultProxy, registry: LocalRegistry, blob_check: str, delta: int
    ) -> None:
        """A manifest whose layer descriptor has the wrong size (the registry accepts it) is
        size_mismatch for that layer, in every blob_check mode, confirmed on the recheck."""
        manifest = get_manifest(registry, APP, "v1")
        layer = manifest["layers"][0]
        layer["size"] += delta
        tag = f"size{delta:+d}".replace("+", "p").replace("-", "m")
        put_manifest(registry, APP, tag, json.dumps(manifest).encode())
        images = [{"repository": APP, "tag": tag, "environments": ["faulty"]}, *IMAGES]
        config = two_environments(proxy.url, registry.url, images=images, blob_check=blob_check)
        run = probe(config)
        crafted = next(r for r in run.every_faulty if r.tag == tag)
        assert crafted.outcome is Outcome.SIZE_MISMATCH, dump(crafted)
        wrong = {b.digest: b for b in crafted.blobs}[layer["digest"]]
        assert (wrong.outcome, wrong.first_outcome) == ((Outcome.SIZE_MISMATCH,) * 2)
        assert wrong.evidence is not None
        assert f"the descriptor says {layer['size']}" in wrong.evidence.detail
        assert sum(b.outcome is Outcome.OK for b in crafted.blobs) == 2
        assert crafted.manifests[0].outcome is Outcome.OK


# -- the token endpoint ---------------------------------------------------------------------


@dataclass
class ShapingIssuer(TokenIssuer):
    """The test issuer, with its answer reshaped: `expires_in` replaced (None: as issued), and
    the JWT's own lifetime set to `jwt_seconds` (None: as issued)."""

    expires_in: object = None
    jwt_seconds: int | None = None

    async def _token(self, request: web.Request) -> web.Response:
        response = await super()._token(request)
        if response.status != 200 or (self.expires_in is None and self.jwt_seconds is None):
            return response
        assert isinstance(response.body, bytes)
        document = json.loads(response.body)
        if self.jwt_seconds is not None:
            payload = document["token"].split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            claims["exp"] = int(time.time()) + self.jwt_seconds
            claims["nbf"] = claims["iat"] = min(claims["iat"], claims["exp"] - 60)
            document["token"] = self.trusted_key.sign_jwt(claims)
        if self.expires_in is not None:
            document["expires_in"] = self.expires_in
        return web.json_response(document)


@dataclass
class TokenBed:
    issuer: ShapingIssuer
    proxy: FaultProxy  # in front of the issuer: the registry's realm
    registry: LocalRegistry

    @property
    def realm(self) -> str:
        return f"{self.proxy.url}/token"

    def reset(self) -> None:
        self.proxy.clear()
        self.proxy.hits.clear()
        self.issuer.clear()
        self.issuer.expires_in = None
        self.issuer.jwt_seconds = None

    def pull_token_requests(self, repository: str) -> int:
        scope = f"repository:{repository}:pull"
        return sum(1 for r in self.issuer.received() if r.scopes == (scope,))


@pytest.fixture(scope="module")
def token_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenBed]:
    """A token registry whose realm is a FaultProxy in front of the test issuer, seeded."""
    root = tmp_path_factory.mktemp("token-faults")
    with (
        ShapingIssuer(root / "issuer", {USER: PASSWORD}) as issuer,
        FaultProxy(f"http://127.0.0.1:{issuer.port}") as proxy,
    ):
        auth = TokenAuth(f"{proxy.url}/token", issuer.service, issuer.issuer, issuer.certificate)
        with start_registry(root / "registry", token=auth) as registry:
            document = catalog(
                registry.url, IMAGES, auth={"username": USER, "password_env": PASSWORD_ENV}
            )
            write_config(root, document)
            seed_images(root / "canary.yaml", *SEED_ARGS, env={PASSWORD_ENV: PASSWORD})
            yield TokenBed(issuer, proxy, registry)


@pytest.fixture
def bed(token_bed: TokenBed) -> Iterator[TokenBed]:
    token_bed.reset()
    yield token_bed
    token_bed.reset()


def token_config(bed: TokenBed, healthy: LocalRegistry) -> Config:
    """`faulty` is the token registry (its realm behind the proxy), `healthy` the anonymous one."""
    return two_environments(
        bed.registry.url,
        healthy.url,
        faulty={"auth": {"username": USER, "password_env": PASSWORD_ENV}},
        environ={PASSWORD_ENV: PASSWORD},
    )


class TestTokenEndpoint:
    def test_healthy_token_flow(self, bed: TokenBed, registry: LocalRegistry) -> None:
        """Through the proxy the token flow works: one pull token per repository."""
        run = probe(token_config(bed, registry))
        assert all(r.ok for r in run.faulty.values()), run.faulty
        assert [bed.pull_token_requests(name) for name in (APP, MULTI)] == [1, 1]

    def test_token_endpoint_fails(self, bed: TokenBed, registry: LocalRegistry) -> None:
        """A token endpoint answering 500 makes each pull http_5xx, its evidence the realm."""
        bed.proxy.inject(r"^/token", Fault.STATUS, status=500)
        run = probe(token_config(bed, registry))
        for result in run.faulty.values():
            assert result.outcome is Outcome.HTTP_5XX, dump(result)
            [manifest] = result.manifests
            assert manifest.status == 500
            assert manifest.evidence is not None
            assert manifest.evidence.url == bed.realm

    def test_token_endpoint_slow(self, bed: TokenBed, registry: LocalRegistry) -> None:
        """A token endpoint slower than the pull's timeout is a timeout during the manifest."""
        bed.proxy.inject(r"^/token", Fault.LATENCY, seconds=30)
        run = probe(token_config(bed, registry))
        for result in run.faulty.values():
            assert result.outcome is Outcome.TIMEOUT, dump(result)
            assert result.evidence is not None
            assert result.evidence.detail.endswith("(during manifest)")
        healthy_first(run)

    @pytest.mark.parametrize(
        "body",
        [b'{"expires_in": 300}', b'{"token": ""}', b'{"token": "has spaces"}', b"[]"],
        ids=["no-token", "empty", "not-header-safe", "not-an-object"],
    )
    def test_token_endpoint_without_a_token(
        self, bed: TokenBed, registry: LocalRegistry, body: bytes
    ) -> None:
        """A 200 from the token endpoint without a usable token is invalid_response."""
        bed.proxy.inject(r"^/token", Fault.STATUS, status=200, body=body)
        run = probe(token_config(bed, registry))
        for result in run.faulty.values():
            assert result.outcome is Outcome.INVALID_RESPONSE, dump(result)
            [manifest] = result.manifests
            assert manifest.evidence is not None
            assert manifest.evidence.url == bed.realm
            assert manifest.evidence.detail.startswith("the token endpoint")

    def test_token_endpoint_rate_limited(self, bed: TokenBed, registry: LocalRegistry) -> None:
        """A 429 from the token endpoint is toomanyrequests."""
        bed.proxy.inject(r"^/token", Fault.TOO_MANY_REQUESTS)
        run = probe(token_config(bed, registry))
        for result in run.faulty.values():
            assert result.outcome is Outcome.TOOMANYREQUESTS, dump(result)

    @pytest.mark.parametrize("expires_in", [0, -60], ids=["zero", "negative"])
    def test_already_expired_expires_in(
        self, bed: TokenBed, registry: LocalRegistry, expires_in: int
    ) -> None:
        """A valid token said to expire already (`expires_in` ≤ 0) is used, and kept for the
        default 60 s: one token per repository, and every pull verifies."""
        bed.issuer.expires_in = expires_in
        run = probe(token_config(bed, registry))
        assert all(r.ok for r in run.faulty.values()), run.faulty
        assert [bed.pull_token_requests(name) for name in (APP, MULTI)] == [1, 1]

    def test_short_lived_token_is_renewed_at_half_its_life(
        self, bed: TokenBed, registry: LocalRegistry
    ) -> None:
        """A token valid for less than twice the 5 s refresh margin is renewed at half its life,
        not for every request: a quick pull verifies on one token per repository."""
        bed.issuer.expires_in = 2
        run = probe(token_config(bed, registry))
        assert all(r.ok for r in run.faulty.values()), run.faulty
        # Before: manifest + config + 2 layers, and index + 2 platforms + 2 configs + 4 layers.
        assert [bed.pull_token_requests(name) for name in (APP, MULTI)] == [1, 1]

    def test_expired_token_is_unauthorized(self, bed: TokenBed, registry: LocalRegistry) -> None:
        """A token that has really expired is refused by the registry; the canary asks for a
        fresh one once, is refused again, and reports unauthorized with the registry's 401."""
        bed.issuer.jwt_seconds = -600  # past distribution's 60 s leeway
        run = probe(token_config(bed, registry))
        for result in run.faulty.values():
            assert result.outcome is Outcome.UNAUTHORIZED, dump(result)
            [manifest] = result.manifests
            assert manifest.status == 401
            assert manifest.evidence is not None
            assert manifest.evidence.url.startswith(bed.registry.url)
        assert [bed.pull_token_requests(name) for name in (APP, MULTI)] == [2, 2]


def test_unreachable_token_endpoint(tmp_path: Path, registry: LocalRegistry) -> None:
    """A realm nobody listens on is connection_error, its evidence the realm."""
    port = free_port()
    with TokenIssuer(tmp_path / "issuer", {USER: PASSWORD}) as issuer:
        realm = f"http://127.0.0.1:{port}/token"
        auth = TokenAuth(realm, issuer.service, issuer.issuer, issuer.certificate)
        with start_registry(tmp_path / "registry", token=auth) as token_registry:
            config = two_environments(
                token_registry.url,
                registry.url,
                faulty={"auth": {"username": USER, "password_env": PASSWORD_ENV}},
                environ={PASSWORD_ENV: PASSWORD},
            )
            run = probe(config)
    for result in run.faulty.values():
        assert result.outcome is Outcome.CONNECTION_ERROR, dump(result)
        [manifest] = result.manifests
        assert manifest.evidence is not None
        assert manifest.evidence.url == realm
