"""Every data shape against the real registry, each built by a tool that is not the canary: schema 1
and zstd by skopeo, artifacts and referrers by the `oras` client, foreign layers, nested indexes
and the rest hand-written and pushed over plain HTTP. Healthy, each is ok with every stored blob
verified; after the repository's links are removed, blob_unknown on exactly the lost blobs.
Where a runtime can tell, containerd (`ctr content fetch`) agrees with the canary."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import oras.client
import oras.oci
import pytest

from canary.testbed import LocalRegistry, start_registry
from tests import shapes
from tests.conftest import catalog, probe_json, write_config
from tests.oci_tools import UMOCI, Skopeo, build_image, init_layout, run_tool
from tests.runtimes import Containerd

pytestmark = pytest.mark.registry

CREATED = "2018-07-08T09:10:11Z"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """The real registry, accepting schema 1 pushes and foreign layers whose urls are on
    loopback, as a registry in service since 2016 would be configured."""
    with start_registry(
        tmp_path / "registry", schema1=True, foreign_urls=r"^http://127\.0\.0\.1:[0-9]+/"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    runtime = Containerd(tmp_path_factory.mktemp("ctrd"))
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with one two-layer linux/amd64 image, `v1`, written by umoci."""
    work = tmp_path_factory.mktemp("umoci")
    path = init_layout(work / "layout")
    build_image(
        path,
        "v1",
        [{"etc/release": b"shapes\n"}, {"opt/payload.bin": bytes(range(256)) * 12}],
        platform="linux/amd64",
        created=CREATED,
        workdir=work,
    )
    # `hist`: the same image with a history step that changed no files (an empty layer, which
    # a schema 1 conversion writes as a `throwaway` layer).
    history = ["--created", CREATED, "--history.created", CREATED]
    run_tool([UMOCI, "config", "--image", f"{path}:v1", "--tag", "hist", *history])
    return path


class Source:
    """A plain HTTP server on loopback serving the bodies of foreign layers, and counting hits."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.hits: list[tuple[str, str | None]] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                source.hits.append((self.path, self.headers.get("Authorization")))
                body = source.bodies.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def source() -> Iterator[Source]:
    served = Source()
    try:
        yield served
    finally:
        served.close()


def probe(
    tmp_path: Path, registry: LocalRegistry, images: list[dict[str, Any]], **defaults: Any
) -> list[dict[str, Any]]:
    document = catalog(registry.url, images)
    document["defaults"].update(defaults)
    _, results = probe_json(write_config(tmp_path, document))
    return results


def one(
    tmp_path: Path, registry: LocalRegistry, repository: str, tag: str = "v1", **image: Any
) -> dict[str, Any]:
    (result,) = probe(tmp_path, registry, [{"repository": repository, "tag": tag, **image}])
    return result


def lost(result: dict[str, Any]) -> set[str]:
    """The digests of the blobs a result reports unknown."""
    return {b["digest"] for b in result["blobs"] if b["outcome"] == "blob_unknown"}


def verified(result: dict[str, Any]) -> set[str]:
    return {b["digest"] for b in result["blobs"] if b["outcome"] == "ok"}


def served_digest(registry: LocalRegistry, repository: str, tag: str) -> str:
    accept = ", ".join([shapes.OCI_MANIFEST, shapes.SCHEMA1_SIGNED])
    return shapes.Pusher(registry.url).get(repository, tag, accept, method="HEAD")[0]


class TestSchema1:
    def test_skopeo_v2s1_as_skopeo_and_containerd_see_it(
        self,
        registry: LocalRegistry,
        layout: Path,
        containerd: Containerd,
        tmp_path: Path,
    ) -> None:
        """skopeo's schema 1 conversion verifies with skopeo's digest (the registry's), every
        layer a runtime downloads, and the history's date; without its links, exactly those
        layers are unknown, and containerd fails on the same image."""
        skopeo = Skopeo(registry.url, tmp_path / "skopeo")
        skopeo.push(layout, "hist", "legacy/app", "v1", manifest_format="v2s1")
        raw = skopeo.inspect_raw("legacy/app", "v1")
        document = json.loads(raw)
        assert document["schemaVersion"] == 1
        assert "signatures" in document
        digest = skopeo.inspect_digest("legacy/app", "v1")
        assert digest == served_digest(registry, "legacy/app", "v1")
        assert digest != shapes.sha256(raw)  # signed: the digest is the payload's
        history = [json.loads(h["v1Compatibility"]) for h in document["history"]]
        wanted = {
            layer["blobSum"]
            for layer, step in zip(document["fsLayers"], history, strict=True)
            if not step.get("throwaway")
        }
        empty = {layer["blobSum"] for layer in document["fsLayers"]} - wanted
        assert len(wanted) == 2
        assert len(empty) == 1

        result = one(tmp_path, registry, "legacy/app", digest=digest, published=CREATED)
        assert (result["outcome"], result["matches_pin"]) == ("ok", True)
        assert result["manifest"]["media_type"] == shapes.SCHEMA1_SIGNED
        assert verified(result) == wanted
        assert {s["digest"] for s in result["skipped"]} == empty
        assert result["published"][0]["status"] == "ok"
        reference = f"127.0.0.1:{registry.port}/legacy/app:v1"
        assert containerd.fetch(reference).ok

        registry.remove_layer_links("legacy/app")
        broken = one(tmp_path, registry, "legacy/app", digest=digest)
        assert broken["outcome"] == "blob_unknown"
        assert broken["manifest"]["outcome"] == "ok"
        assert lost(broken) == wanted
        fetched = containerd.fetch(reference)
        assert not fetched.ok
        assert "not found" in fetched.output


class TestCompression:
    def test_zstd_layers_from_skopeo(
        self,
        registry: LocalRegistry,
        layout: Path,
        containerd: Containerd,
        tmp_path: Path,
    ) -> None:
        skopeo = Skopeo(registry.url, tmp_path / "skopeo")
        skopeo.push(layout, "v1", "zstd/app", "v1", manifest_format="oci", compress_format="zstd")
        document = json.loads(skopeo.inspect_raw("zstd/app", "v1"))
        layers = {layer["digest"] for layer in document["layers"]}
        assert {layer["mediaType"] for layer in document["layers"]} == {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        }
        result = one(tmp_path, registry, "zstd/app")
        assert result["outcome"] == "ok"
        assert verified(result) == layers | {document["config"]["digest"]}
        assert containerd.fetch(f"127.0.0.1:{registry.port}/zstd/app:v1").ok
        registry.remove_layer_links("zstd/app")
        assert lost(one(tmp_path, registry, "zstd/app")) == layers | {document["config"]["digest"]}
        assert not containerd.fetch(f"127.0.0.1:{registry.port}/zstd/app:v1").ok

    def test_uncompressed_layers_and_a_config_without_created(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        """Plain tar layers verify; a config without `created` is a missing date, never a
        failed pull."""
        manifest = shapes.image("plain", created=None)
        body = json.loads(manifest.body)
        for layer in body["layers"]:
            layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
        plain = shapes.Manifest(json.dumps(body).encode(), shapes.OCI_MANIFEST, manifest.blobs)
        shapes.Pusher(registry.url).manifest("plain/app", plain, "v1")
        result = one(tmp_path, registry, "plain/app")
        assert result["outcome"] == "ok"
        assert verified(result) == {b.digest for b in manifest.blobs}
        assert result["published"][0]["status"] == "missing"


class TestForeignLayers:
    FOREIGN = shapes.Blob(b"windows base layer" * 500, shapes.DOCKER_FOREIGN)

    def _push(self, registry: LocalRegistry, source: Source, docker: bool) -> shapes.Manifest:
        source.bodies["/base"] = self.FOREIGN.data
        manifest = shapes.foreign_image("win", self.FOREIGN, [f"{source.url}/base"], docker=docker)
        shapes.Pusher(registry.url).manifest("windows/app", manifest, "v1")
        return manifest

    @pytest.mark.parametrize(
        "docker", [True, False], ids=["docker-foreign", "oci-nondistributable"]
    )
    def test_skipped_and_never_a_page(
        self, registry: LocalRegistry, source: Source, tmp_path: Path, docker: bool
    ) -> None:
        """The registry never held the foreign layer: the canary skips it with its reason; after
        the loss of the links, exactly the image's own blobs are unknown."""
        manifest = self._push(registry, source, docker)
        own = {b.digest for b in manifest.blobs}
        result = one(tmp_path, registry, "windows/app")
        assert result["outcome"] == "ok", result
        assert verified(result) == own
        assert [(s["digest"], s["reason"]) for s in result["skipped"]] == [
            (self.FOREIGN.digest, "non_distributable")
        ]
        assert source.hits == []
        registry.remove_layer_links("windows/app")
        broken = one(tmp_path, registry, "windows/app")
        assert lost(broken) == own
        assert len(broken["skipped"]) == 1

    def test_verified_at_its_urls_as_containerd_does(
        self,
        registry: LocalRegistry,
        source: Source,
        containerd: Containerd,
        tmp_path: Path,
    ) -> None:
        """With foreign_layers: urls the layer is read from its source (hop foreign, no
        credentials), and containerd, which fetches it there too, agrees."""
        manifest = self._push(registry, source, docker=True)
        result = one(tmp_path, registry, "windows/app", foreign_layers="urls")
        assert result["outcome"] == "ok", result
        foreign = next(b for b in result["blobs"] if b["digest"] == self.FOREIGN.digest)
        assert (foreign["hop"], foreign["bytes"]) == ("foreign", len(self.FOREIGN.data))
        assert source.hits == [("/base", None)]
        reference = f"127.0.0.1:{registry.port}/windows/app:v1"
        assert containerd.fetch(reference, platform="windows/amd64").ok

        del source.bodies["/base"]
        gone = one(tmp_path, registry, "windows/app", foreign_layers="urls")
        assert gone["outcome"] == "blob_unknown"
        (failed,) = [b for b in gone["blobs"] if b["outcome"] != "ok"]
        assert (failed["digest"], failed["hop"]) == (self.FOREIGN.digest, "foreign")
        assert verified(gone) == {b.digest for b in manifest.blobs}
        assert not containerd.fetch(reference, platform="windows/amd64").ok


def _oras(registry: LocalRegistry) -> oras.client.OrasClient:
    return oras.client.OrasClient(hostname=f"127.0.0.1:{registry.port}", insecure=True)


def _raw(registry: LocalRegistry, repository: str, reference: str) -> bytes:
    return shapes.Pusher(registry.url).get(repository, reference, shapes.OCI_MANIFEST)[1]


class TestArtifacts:
    def test_helm_chart_pushed_by_oras(self, registry: LocalRegistry, tmp_path: Path) -> None:
        """A chart as Helm pushes one (Helm config, chart layer, created annotation) verifies
        blob by blob and takes its date from the annotation: Helm's config has no `created`."""
        chart = tmp_path / "chart.tgz"
        chart.write_bytes(b"\x1f\x8b" + b"chart" * 300)
        config = tmp_path / "config.json"
        config.write_text('{"name":"app","version":"1.2.3","apiVersion":"v2"}')
        _oras(registry).push(
            target=f"127.0.0.1:{registry.port}/charts/app:1.2.3",
            files=[f"{chart}:{shapes.HELM_CHART}"],
            manifest_config=f"{config}:{shapes.HELM_CONFIG}",
            manifest_annotations={shapes.CREATED: CREATED},
            disable_path_validation=True,
            quiet=True,
        )
        document = json.loads(_raw(registry, "charts/app", "1.2.3"))
        blobs = {document["config"]["digest"], document["layers"][0]["digest"]}
        result = one(tmp_path, registry, "charts/app", "1.2.3", published=CREATED)
        assert result["outcome"] == "ok", result
        assert verified(result) == blobs
        assert result["published"] == [
            {"timestamp": CREATED, "source": "config", "status": "ok", "detail": None}
        ]
        registry.remove_layer_links("charts/app")
        assert lost(one(tmp_path, registry, "charts/app", "1.2.3")) == blobs

    def test_an_artifact_without_any_date_need_not_be_judged(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        payload = tmp_path / "report.json"
        payload.write_text('{"report": true}')
        _oras(registry).push(
            target=f"127.0.0.1:{registry.port}/reports/app:1",
            files=[f"{payload}:application/vnd.example.report.v1+json"],
            disable_path_validation=True,
            quiet=True,
        )
        judged = one(tmp_path, registry, "reports/app", "1")
        unjudged = one(tmp_path, registry, "reports/app", "1", published_sources=[])
        assert judged["outcome"] == unjudged["outcome"] == "ok"
        assert judged["published"][0]["status"] == "missing"
        assert unjudged["published"] == []


class TestNestedIndexes:
    def test_nested_index_as_containerd_walks_it(
        self, registry: LocalRegistry, containerd: Containerd, tmp_path: Path
    ) -> None:
        """An index in an index, an entry without a platform, and a buildx attestation: the
        canary verifies every image blob, skips the attestation, and agrees with containerd."""
        amd = shapes.image("amd", platform=("linux", "amd64"))
        arm = shapes.image("arm", platform=("linux", "arm64"))
        statement, marks = shapes.attestation(amd)
        unknown = {"os": "unknown", "architecture": "unknown"}
        inner = shapes.index([(amd, None)])
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": shapes.OCI_INDEX,
                "manifests": [
                    inner.descriptor(platform={"os": "linux", "architecture": "amd64"}),
                    arm.descriptor(platform={"os": "linux", "architecture": "arm64"}),
                    statement.descriptor(platform=unknown, **marks),
                ],
            }
        ).encode()
        top = shapes.Manifest(body, shapes.OCI_INDEX, children=(inner, arm, statement))
        shapes.Pusher(registry.url).manifest("nested/app", top, "v1")

        result = one(tmp_path, registry, "nested/app")
        assert result["outcome"] == "ok", result
        images = {b.digest for b in (*amd.blobs, *arm.blobs)}
        assert verified(result) == images
        assert [(s["digest"], s["reason"]) for s in result["skipped"]] == [
            (statement.digest, "attestation")
        ]
        only_amd = one(tmp_path, registry, "nested/app", platforms=["linux/amd64"])
        assert verified(only_amd) == {b.digest for b in amd.blobs}
        reference = f"127.0.0.1:{registry.port}/nested/app:v1"
        assert containerd.fetch(reference, platform="linux/amd64").ok

        registry.remove_layer_links("nested/app")
        broken = one(tmp_path, registry, "nested/app")
        assert lost(broken) == images
        assert not containerd.fetch(reference, platform="linux/amd64").ok

    def test_an_index_of_attestations_alone_verifies_nothing(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        amd = shapes.image("amd")
        statement, marks = shapes.attestation(amd)
        body = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": shapes.OCI_INDEX,
                "manifests": [statement.descriptor(**marks)],
            }
        ).encode()
        top = shapes.Manifest(body, shapes.OCI_INDEX, children=(statement,))
        shapes.Pusher(registry.url).manifest("nothing/app", top, "v1")
        result = one(tmp_path, registry, "nothing/app")
        assert result["outcome"] == "nothing_verified"
        assert result["evidence"]["detail"] == (
            "nothing verified: the index names no image manifest to pull "
            "(1 attestation manifest(s) skipped)"
        )


class TestMountedBlobs:
    def test_a_mounted_blob_is_read_through_its_own_repository(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        """Blobs mounted from another repository are served through this one's links: losing
        the other's links changes nothing, losing its own is blob_unknown."""
        manifest = shapes.image("mounted")
        pusher = shapes.Pusher(registry.url)
        pusher.manifest("mount/source", manifest, "v1")
        for blob in manifest.blobs:
            assert pusher.mount("mount/target", blob, "mount/source") == 201
        bare = shapes.Manifest(manifest.body, manifest.media_type)
        pusher.manifest("mount/target", bare, "v1")
        registry.remove_layer_links("mount/source")
        result = one(tmp_path, registry, "mount/target")
        assert result["outcome"] == "ok"
        registry.remove_layer_links("mount/target")
        assert lost(one(tmp_path, registry, "mount/target")) == {b.digest for b in manifest.blobs}


class TestReferrers:
    def _signed(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> tuple[shapes.Manifest, shapes.Manifest, shapes.Manifest]:
        """An image, an SBOM pushed by oras with a subject, listed in the tag-schema index as a
        client without the referrers API keeps it, and a cosign signature under its tag."""
        subject = shapes.image("signed")
        pusher = shapes.Pusher(registry.url)
        pusher.manifest("signed/app", subject, "v1")
        sbom = tmp_path / "sbom.spdx.json"
        sbom.write_text('{"spdxVersion": "SPDX-2.3"}')
        config = tmp_path / "empty.json"
        config.write_text("{}")
        raw = _raw(registry, "signed/app", "v1")
        response = _oras(registry).push(
            target=f"127.0.0.1:{registry.port}/signed/app:sbom",
            files=[f"{sbom}:{shapes.SPDX}"],
            manifest_config=f"{config}:{shapes.SPDX}",
            subject=oras.oci.Subject(shapes.OCI_MANIFEST, subject.digest, len(raw)),
            disable_path_validation=True,
            quiet=True,
        )
        sbom_digest = response.headers["Docker-Content-Digest"]
        sbom_body = _raw(registry, "signed/app", sbom_digest)
        listed = shapes.referrers_index([shapes.Manifest(sbom_body, shapes.OCI_MANIFEST)])
        pusher.manifest("signed/app", listed, subject.digest.replace(":", "-"))
        signature = shapes.cosign_signature(subject)
        pusher.manifest("signed/app", signature, shapes.cosign_tag(subject, "sig"))
        return subject, signature, shapes.Manifest(sbom_body, shapes.OCI_MANIFEST)

    def test_signature_and_sbom_found_and_verified(
        self, registry: LocalRegistry, tmp_path: Path
    ) -> None:
        subject, signature, sbom = self._signed(registry, tmp_path)
        result = one(tmp_path, registry, "signed/app", referrers={"require": ["signature", "sbom"]})
        assert result["outcome"] == "ok", result
        assert result["requirements"] == {"signature": True, "sbom": True}
        assert sorted((r["digest"], r["found_via"]) for r in result["referrers"]) == sorted(
            [(signature.digest, "cosign_tag"), (sbom.digest, "tag_schema")]
        )
        by_referrer = {(b["referrer"], b["digest"]) for b in result["blobs"] if b["referrer"]}
        sbom_document = json.loads(sbom.body)
        sbom_blobs = [sbom_document["config"], *sbom_document["layers"]]
        assert by_referrer == {(signature.digest, b.digest) for b in signature.blobs} | {
            (sbom.digest, b["digest"]) for b in sbom_blobs
        }

        registry.remove_tag("signed/app", shapes.cosign_tag(subject, "sig"))
        unsigned = one(tmp_path, registry, "signed/app", referrers={"require": ["signature"]})
        assert unsigned["outcome"] == "referrer_missing"
        assert unsigned["requirements"] == {"signature": False}

    def test_lost_links_reach_the_referrers(self, registry: LocalRegistry, tmp_path: Path) -> None:
        _, signature, _ = self._signed(registry, tmp_path)
        registry.remove_layer_links("signed/app")
        result = one(tmp_path, registry, "signed/app", referrers={"require": ["signature"]})
        assert result["outcome"] == "blob_unknown"
        by_referrer = {b["digest"] for b in result["blobs"] if b["referrer"] == signature.digest}
        assert by_referrer == {b.digest for b in signature.blobs}
        assert by_referrer <= lost(result)
