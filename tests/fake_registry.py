"""A stateful fake registry (aiohttp) for unit tests: real digests, switchable faults per path."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from canary.registry.media import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST

Fault = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_error(status: int, code: str, message: str) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.json_response(body, status=status)


@dataclass
class FakeImage:
    repository: str
    tag: str
    manifest: bytes
    config: bytes
    layers: list[bytes]

    @property
    def digest(self) -> str:
        return digest(self.manifest)

    @property
    def blob_digests(self) -> list[str]:
        return [digest(self.config), *(digest(layer) for layer in self.layers)]


@dataclass
class FakeRegistry:
    """Serves manifests and blobs it was given; `faults` answer first for matching paths."""

    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    basic_auth: str | None = None  # the expected Authorization header, when auth is on
    # Served by the OCI 1.1 referrers API when not None: subject digest → descriptors.
    referrers: dict[str, list[dict[str, object]]] | None = None
    # When each request arrived (time.monotonic()), beside `requests`.
    arrivals: list[float] = field(default_factory=list)
    # The Docker-Content-Digest to send for a body whose own digest is the key (schema 1).
    served_digests: dict[str, str] = field(default_factory=dict)

    def put_manifest(self, repository: str, tag: str | None, media_type: str, body: bytes) -> str:
        """Serve `body` as a manifest by digest, and under `tag` when given; its digest."""
        self.manifests[repository, digest(body)] = (media_type, body)
        if tag is not None:
            self.manifests[repository, tag] = (media_type, body)
        return digest(body)

    def put_blob(self, data: bytes) -> dict[str, object]:
        """Serve `data` as a blob; its descriptor without a media type."""
        self.blobs[digest(data)] = data
        return {"digest": digest(data), "size": len(data)}

    def add_image(
        self,
        repository: str,
        tag: str,
        layers: list[bytes],
        created: str | None = "2023-05-01T12:00:00Z",
        platform: tuple[str, str] = ("linux", "amd64"),
        size_override: int | None = None,
    ) -> FakeImage:
        config_doc: dict[str, object] = {"os": platform[0], "architecture": platform[1]}
        if created is not None:
            config_doc["created"] = created
        config = json.dumps(config_doc).encode()
        self.blobs[digest(config)] = config
        for layer in layers:
            self.blobs[digest(layer)] = layer
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
                "layers": [
                    {
                        "mediaType": OCI_LAYER,
                        "digest": digest(layer),
                        "size": size_override if size_override is not None else len(layer),
                    }
                    for layer in layers
                ],
            }
        ).encode()
        self.manifests[repository, tag] = (OCI_MANIFEST, manifest)
        self.manifests[repository, digest(manifest)] = (OCI_MANIFEST, manifest)
        return FakeImage(repository, tag, manifest, config, layers)

    def add_index(self, repository: str, tag: str, children: list[tuple[str, FakeImage]]) -> bytes:
        entries = []
        for platform, child in children:
            os_name, arch = platform.split("/")
            self.manifests[repository, child.digest] = (OCI_MANIFEST, child.manifest)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": child.digest,
                    "size": len(child.manifest),
                    "platform": {"os": os_name, "architecture": arch},
                }
            )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
        body = index.encode()
        self.manifests[repository, tag] = (OCI_INDEX, body)
        return body

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        self.arrivals.append(time.monotonic())
        fault = self.faults.get(request.path)
        if fault is not None:
            answer = await fault(request)
            if answer is not None:
                return answer
        if self.basic_auth and request.headers.get("Authorization") != self.basic_auth:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        path = request.path
        if path == "/v2/":
            return web.json_response({})
        if "/referrers/" in path and self.referrers is not None:
            subject = path.rpartition("/referrers/")[2]
            listed = {"schemaVersion": 2, "mediaType": OCI_INDEX}
            listed["manifests"] = self.referrers.get(subject, [])
            return web.json_response(listed, content_type=OCI_INDEX)
        name, kind, ref = _split(path)
        if kind == "manifests" and (name, ref) in self.manifests:
            media_type, body = self.manifests[name, ref]
            served = self.served_digests.get(digest(body), digest(body))
            headers = {"Docker-Content-Digest": served, "X-Request-Id": "req-manifest"}
            return _body(request, body, media_type, headers)
        if kind == "manifests":
            return oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        if kind == "blobs" and ref in self.blobs:
            return _body(
                request,
                self.blobs[ref],
                "application/octet-stream",
                {"Docker-Content-Digest": ref, "X-Request-Id": f"req-{ref[7:19]}"},
            )
        if kind == "blobs":
            if request.method == "HEAD":
                return web.Response(status=404)
            return oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        return web.Response(status=404)


def _split(path: str) -> tuple[str, str, str]:
    for kind in ("manifests", "blobs"):
        marker = f"/{kind}/"
        if marker in path:
            name, _, ref = path.removeprefix("/v2/").partition(marker)
            return name, kind, ref
    return "", "", ""


def _body(
    request: web.Request, body: bytes, media_type: str, headers: dict[str, str]
) -> web.Response:
    # aiohttp sends the headers of a HEAD, Content-Length included, without the body.
    range_header = request.headers.get("Range")
    if range_header and range_header.startswith("bytes=0-"):
        end = int(range_header.removeprefix("bytes=0-"))
        part = body[: end + 1]
        headers = {**headers, "Content-Range": f"bytes 0-{len(part) - 1}/{len(body)}"}
        return web.Response(status=206, body=part, content_type=media_type, headers=headers)
    return web.Response(body=body, content_type=media_type, headers=headers)
