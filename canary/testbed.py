"""A real CNCF distribution registry on loopback, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REGISTRY_BINARY = "docker-registry"
START_SECONDS = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """The registry's `auth: token` settings; the issuer signs with the key of `certificate`."""

    realm: str
    service: str
    issuer: str
    certificate: Path


@dataclass
class LocalRegistry:
    """A running `docker-registry serve` with its storage under `root`."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    def repository_dir(self, repository: str) -> Path:
        return self.storage / "docker/registry/v2/repositories" / repository

    def blob_data(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        blobs = self.storage / "docker/registry/v2/blobs"
        return blobs / algorithm / hexpart[:2] / hexpart / "data"

    def remove_layer_links(self, repository: str) -> None:
        """Reproduce the incident: the repository's blob links are gone, the blob data is not."""
        shutil.rmtree(self.repository_dir(repository) / "_layers")

    def remove_tag(self, repository: str, tag: str) -> None:
        shutil.rmtree(self.repository_dir(repository) / "_manifests/tags" / tag)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def registry_config(
    storage: Path,
    port: int,
    *,
    htpasswd: Path | None = None,
    token: TokenAuth | None = None,
    redirect_to: str | None = None,
    tls: tuple[Path, Path] | None = None,
    delete: bool = True,
    schema1: bool = False,
    foreign_urls: str | None = None,
) -> dict[str, Any]:
    """A registry config with no blob descriptor cache, which could mask missing links; `tls`
    is (certificate, key) in PEM to serve HTTPS; `delete` false turns the DELETE API off;
    `schema1` accepts schema 1 pushes; `foreign_urls` is the pattern the `urls` of foreign
    layers must match (without it, manifests with foreign layers are refused)."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": delete},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "registry-canary-test-bed"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "registry-canary", "path": str(htpasswd)}}
    if token is not None:
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "rootcertbundle": str(token.certificate),
            }
        }
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    if schema1:
        config["compatibility"] = {"schema1": {"enabled": True}}
    if foreign_urls is not None:
        config["validation"] = {"manifests": {"urls": {"allow": [foreign_urls]}}}
    if redirect_to is not None:
        config["middleware"] = {
            "storage": [{"name": "redirect", "options": {"baseurl": redirect_to}}]
        }
    return config


def start_registry(root: Path, **options: Any) -> LocalRegistry:
    """Start the Debian `docker-registry` on a free loopback port and wait until it answers."""
    if shutil.which(REGISTRY_BINARY) is None:
        raise RuntimeError(f"{REGISTRY_BINARY} is not installed (Debian package docker-registry)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "storage").mkdir(exist_ok=True)
    for _ in range(5):
        port = free_port()
        config_path = root / "registry.yml"
        config_path.write_text(yaml.safe_dump(registry_config(root / "storage", port, **options)))
        log = root / "registry.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config_path)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        scheme = "https" if options.get("tls") else "http"
        registry = LocalRegistry(root=root, port=port, process=process, log=log, scheme=scheme)
        if _wait_ready(registry):
            return registry
        registry.stop()
    raise RuntimeError(f"the registry did not start; see {root / 'registry.log'}")


def _wait_ready(registry: LocalRegistry) -> bool:
    deadline = time.monotonic() + START_SECONDS
    # Only "does it answer": a test CA's certificate need not be trusted for that.
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    while time.monotonic() < deadline:
        if registry.process.poll() is not None:
            return False  # most likely the port was taken between choosing and binding
        try:
            with urllib.request.urlopen(  # noqa: S310 - loopback
                f"{registry.url}/v2/", timeout=1, context=unverified
            ):
                return True
        except urllib.error.HTTPError:
            return True  # 401 from an auth-enabled registry is an answer too
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    return False
