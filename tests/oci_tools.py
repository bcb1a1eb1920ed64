"""Images written and read by independent tools (umoci, skopeo), never by the canary's own code.

Everything here runs the Debian tools in child processes with fixed argument lists, so the
canary is checked against bytes it did not make, and its answers against ones it did not give.
Media types and digests are spelled out here rather than imported from `canary`, on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

UMOCI = "umoci"
SKOPEO = "skopeo"
TOOL_TIMEOUT = 60.0

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"

_DEBIAN_PACKAGES = {UMOCI: "umoci", SKOPEO: "skopeo"}


class ToolError(RuntimeError):
    """An independent tool could not be run, or exited with an error."""


def run_tool(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = TOOL_TIMEOUT
) -> bytes:
    """Run one command to completion and return its stdout; any failure raises ToolError."""
    command = " ".join(args)
    try:
        done = subprocess.run(
            list(args),
            capture_output=True,
            timeout=timeout,
            check=True,
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        package = _DEBIAN_PACKAGES.get(args[0], args[0])
        raise ToolError(f"{args[0]} is not installed (Debian package {package})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"`{command}` did not finish within {timeout:g}s") from exc
    except subprocess.CalledProcessError as exc:
        output = (exc.stderr or exc.stdout or b"(no output)").decode(errors="replace").strip()
        raise ToolError(f"`{command}` exited with status {exc.returncode}: {output}") from exc
    return done.stdout


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- OCI image layouts written by umoci -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayoutImage:
    """One image manifest that umoci wrote into a layout under `ref`."""

    layout: Path
    ref: str
    platform: str  # os/architecture, as given to `umoci config`
    created: str  # the `created` given to `umoci config`, verbatim
    digest: str
    size: int
    media_type: str

    @property
    def manifest(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(read_blob(self.layout, self.digest))
        return document

    @property
    def config_digest(self) -> str:
        digest: str = self.manifest["config"]["digest"]
        return digest

    @property
    def layer_digests(self) -> tuple[str, ...]:
        return tuple(layer["digest"] for layer in self.manifest["layers"])


def init_layout(layout: Path) -> Path:
    """An empty OCI image layout at `layout`, made by `umoci init`."""
    run_tool([UMOCI, "init", "--layout", str(layout)])
    return layout


def read_blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hexpart = digest.partition(":")
    return (layout / "blobs" / algorithm / hexpart).read_bytes()


def _layout_index(layout: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return document


def layout_entry(layout: Path, ref: str) -> dict[str, Any]:
    """The descriptor that the layout's index.json holds under the ref name `ref`."""
    matches: list[dict[str, Any]] = [
        entry
        for entry in _layout_index(layout).get("manifests", [])
        if entry.get("annotations", {}).get(REF_NAME) == ref
    ]
    if len(matches) != 1:
        raise ToolError(f"{layout}/index.json has {len(matches)} entries named {ref!r}, not 1")
    return matches[0]


def _write_files(rootfs: Path, files: Mapping[str, bytes], mtime: float) -> None:
    for name, content in files.items():
        path = rootfs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    # Fixed times on the files and every directory above them keep the layer bytes stable.
    for name in files:
        relative = Path(name)
        for stamped in (relative, *relative.parents):
            os.utime(rootfs / stamped, (mtime, mtime))


def build_image(
    layout: Path,
    ref: str,
    layers: Sequence[Mapping[str, bytes]],
    *,
    platform: str,
    created: str,
    workdir: Path,
) -> LayoutImage:
    """Write an image with one layer per mapping of path → content into `layout` under `ref`.

    `umoci new`, then `umoci unpack --rootless` and one `umoci repack --refresh-bundle` per
    layer, then `umoci config` for the platform and `created` (an RFC 3339 date, kept verbatim).
    Layers come from unpack/repack because `umoci insert` of this version writes tar streams
    without their end-of-archive blocks.
    """
    os_name, _, architecture = platform.partition("/")
    if not os_name or not architecture or "/" in architecture:
        raise ValueError(f"{platform!r} is not os/architecture (umoci cannot set a variant)")
    image = f"{layout}:{ref}"
    bundle = workdir / f"bundle-{ref}"
    mtime = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    run_tool([UMOCI, "new", "--image", image])
    run_tool([UMOCI, "unpack", "--rootless", "--image", image, str(bundle)])
    repack = [UMOCI, "repack", "--refresh-bundle", "--history.created", created]
    for files in layers:
        _write_files(bundle / "rootfs", files, mtime)
        run_tool([*repack, "--image", image, str(bundle)])
    platform_flags = ["--os", os_name, "--architecture", architecture]
    run_tool(
        [UMOCI, "config", "--no-history", "--image", image, *platform_flags, "--created", created]
    )
    entry = layout_entry(layout, ref)
    return LayoutImage(
        layout=layout,
        ref=ref,
        platform=platform,
        created=created,
        digest=entry["digest"],
        size=entry["size"],
        media_type=entry["mediaType"],
    )


def add_index(layout: Path, ref: str, images: Sequence[LayoutImage]) -> str:
    """Write an OCI image index of `images`, with their platforms, and name it `ref`.

    The index goes into blobs/sha256 like any blob, and index.json gains a descriptor of it
    under the ref name, as an OCI layout holds a multi-platform image. Returns its digest.
    """
    entries = []
    for image in images:
        os_name, _, architecture = image.platform.partition("/")
        entries.append(
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": image.size,
                "platform": {"architecture": architecture, "os": os_name},
            }
        )
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
        separators=(",", ":"),
    ).encode()
    digest = sha256_digest(body)
    (layout / "blobs" / "sha256" / digest.partition(":")[2]).write_bytes(body)
    top = _layout_index(layout)
    top["manifests"] = [
        entry
        for entry in top.get("manifests", [])
        if entry.get("annotations", {}).get(REF_NAME) != ref
    ]
    top["manifests"].append(
        {
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": len(body),
            "annotations": {REF_NAME: ref},
        }
    )
    (layout / "index.json").write_text(json.dumps(top))
    return digest


# --- A registry as skopeo sees it ------------------------------------------------------------


class Skopeo:
    """skopeo against one registry on loopback, without the host's registries.conf or logins."""

    def __init__(self, registry_url: str, workdir: Path) -> None:
        if not registry_url.startswith("http://127.0.0.1:"):
            raise ValueError(f"{registry_url} is not a plain-HTTP registry on loopback")
        self.host = registry_url.removeprefix("http://")
        workdir.mkdir(parents=True, exist_ok=True)
        registries = workdir / "registries.conf"
        registries.write_text("unqualified-search-registries = []\n")
        auth = workdir / "auth.json"
        auth.write_text('{"auths": {}}\n')
        self.env = {
            "CONTAINERS_REGISTRIES_CONF": str(registries),
            "REGISTRY_AUTH_FILE": str(auth),
        }

    def reference(self, repository: str, tag_or_digest: str) -> str:
        separator = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"docker://{self.host}/{repository}{separator}{tag_or_digest}"

    def _run(self, *args: str) -> bytes:
        # The policy is not what these tests check; the host's policy.json must not matter.
        return run_tool([SKOPEO, "--insecure-policy", *args], env=self.env)

    def push(
        self,
        layout: Path,
        ref: str,
        repository: str,
        tag: str,
        *,
        all_platforms: bool = False,
        manifest_format: str | None = None,
        compress_format: str | None = None,
    ) -> None:
        """`skopeo copy oci:LAYOUT:REF docker://HOST/REPO:TAG`, every platform with `--all`,
        layers recompressed with `compress_format` (gzip, zstd)."""
        args = ["copy", "--quiet", "--dest-tls-verify=false"]
        if all_platforms:
            args.append("--all")
        if manifest_format is not None:
            args += ["--format", manifest_format]
        if compress_format is not None:
            args += ["--dest-compress-format", compress_format]
        self._run(*args, f"oci:{layout}:{ref}", self.reference(repository, tag))

    def inspect_raw(self, repository: str, tag_or_digest: str) -> bytes:
        """The manifest or index exactly as served (`skopeo inspect --raw`)."""
        return self._run(
            "inspect", "--raw", "--tls-verify=false", self.reference(repository, tag_or_digest)
        )

    def inspect(
        self, repository: str, tag_or_digest: str, *, architecture: str | None = None
    ) -> dict[str, Any]:
        """`skopeo inspect` (manifest and config), choosing `architecture` from an index."""
        chosen = ["--override-arch", architecture] if architecture else []
        document: dict[str, Any] = json.loads(
            self._run(
                *chosen,
                "inspect",
                "--tls-verify=false",
                self.reference(repository, tag_or_digest),
            )
        )
        return document

    def inspect_digest(self, repository: str, tag: str) -> str:
        """The digest skopeo reports for a tag (`--format '{{.Digest}}'`)."""
        output = self._run(
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            self.reference(repository, tag),
        )
        return output.decode().strip()

    def copy_to_dir(self, repository: str, tag: str, destination: Path) -> None:
        """Pull every platform into a `dir:` directory; skopeo verifies every digest it reads."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        self._run(
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            self.reference(repository, tag),
            f"dir:{destination}",
        )


def blobs_of(manifest: bytes | Mapping[str, Any]) -> set[str]:
    """The config and layer digests an image manifest references."""
    document = json.loads(manifest) if isinstance(manifest, bytes) else manifest
    return {document["config"]["digest"], *(layer["digest"] for layer in document["layers"])}
