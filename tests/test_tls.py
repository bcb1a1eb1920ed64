"""TLS against the real registry served over HTTPS: a trusted test CA, an unknown CA, an expired
certificate, a certificate for another host name, and `tls_verify: false`."""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from canary.testbed import LocalRegistry, start_registry
from tests.conftest import catalog, probe_json, seed_images, write_config
from tests.daemon_fixtures import DaemonFactory, eventually

pytestmark = pytest.mark.registry

SEED_ARGS = ("--layers", "1", "--layer-size", "1KiB")
IMAGES: list[dict[str, Any]] = [{"repository": "canary/tls", "tag": "v1"}]
LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Authority:
    """A test certificate authority: its key, its self-signed certificate and that as a file."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    pem: Path

    @classmethod
    def create(cls, directory: Path, common_name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        pem = directory / f"{common_name.replace(' ', '-')}.pem"
        pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate, pem)

    def issue(
        self,
        directory: Path,
        name: str,
        san: x509.GeneralName,
        not_before: datetime,
        not_after: datetime,
    ) -> tuple[Path, Path]:
        """A server certificate for `san` signed by this CA; (certificate, key) PEM files."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(f"registry-canary test {name}"))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


@dataclass(frozen=True)
class Pki:
    """The trusted CA's file, and server certificates (cert, key) for each case."""

    ca_file: Path
    good: tuple[Path, Path]
    expired: tuple[Path, Path]
    wrong_host: tuple[Path, Path]
    unknown_ca: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA, and server certificates: good, expired, for wrong.example, from another CA."""
    directory = tmp_path_factory.mktemp("pki")
    trusted = Authority.create(directory, "registry-canary test CA")
    stranger = Authority.create(directory, "registry-canary unknown CA")
    now = datetime.now(UTC)
    loopback = x509.IPAddress(LOOPBACK)
    valid = (now - timedelta(days=1), now + timedelta(days=7))
    return Pki(
        ca_file=trusted.pem,
        good=trusted.issue(directory, "good", loopback, *valid),
        expired=trusted.issue(
            directory, "expired", loopback, now - timedelta(days=30), now - timedelta(days=1)
        ),
        wrong_host=trusted.issue(directory, "wrong-host", x509.DNSName("wrong.example"), *valid),
        unknown_ca=stranger.issue(directory, "unknown-ca", loopback, *valid),
    )


@dataclass(frozen=True)
class Registries:
    """One HTTPS registry per certificate, all serving the same seeded storage."""

    good: LocalRegistry
    expired: LocalRegistry
    wrong_host: LocalRegistry
    unknown_ca: LocalRegistry


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Registries]:
    """IMAGES seeded over HTTPS (trusting the CA via ca_file) into the good registry; the others
    serve a copy of its storage, so that only their certificate differs."""
    root = tmp_path_factory.mktemp("tls-registries")
    started: list[LocalRegistry] = []
    try:
        good = start_registry(root / "good", tls=pki.good)
        started.append(good)
        assert good.url.startswith("https://127.0.0.1:"), good.url
        document = catalog(good.url, IMAGES, ca_file=str(pki.ca_file))
        seed_images(write_config(root, document, "seed.yaml"), *SEED_ARGS)
        others = {}
        for name in ("expired", "wrong_host", "unknown_ca"):
            shutil.copytree(good.storage, root / name / "storage")
            others[name] = start_registry(root / name, tls=getattr(pki, name))
            started.append(others[name])
        yield Registries(good=good, **others)
    finally:
        for registry in started:
            registry.stop()


def probe(directory: Path, url: str, name: str, **environment: Any) -> list[dict[str, Any]]:
    """`probe --format json` of IMAGES at `url`; the results, after checking the exit status."""
    config = write_config(directory, catalog(url, IMAGES, **environment), f"{name}.yaml")
    code, results = probe_json(config)
    assert len(results) == len(IMAGES)
    assert code == (0 if all(r["ok"] for r in results) else 1), results
    return results


def assert_verified(results: list[dict[str, Any]]) -> None:
    for result in results:
        assert result["ok"] is True, json.dumps(result, indent=2)
        assert result["manifest"]["outcome"] == "ok"
        assert result["blobs"]
        assert all(blob["outcome"] == "ok" for blob in result["blobs"])


def tls_detail(results: list[dict[str, Any]], url: str) -> str:
    """The evidence detail of a pull that failed with tls_error at the registry."""
    [result] = results
    assert result["ok"] is False
    assert result["outcome"] == "tls_error", json.dumps(result, indent=2)
    manifest = result["manifest"]
    assert manifest["outcome"] == "tls_error"
    assert manifest["status"] is None
    assert result["blobs"] == []
    evidence = manifest["evidence"]
    assert evidence["url"].startswith(url), evidence
    detail: str = evidence["detail"]
    return detail


def test_trusted_with_ca_file(tmp_path: Path, pki: Pki, registries: Registries) -> None:
    """With the test CA as ca_file, the HTTPS pull verifies every manifest and blob."""
    results = probe(tmp_path, registries.good.url, "trusted", ca_file=str(pki.ca_file))
    assert_verified(results)


def test_unknown_ca_without_ca_file(tmp_path: Path, registries: Registries) -> None:
    """Without ca_file the system trust store does not know the test CA: tls_error, and the
    detail says certificate verification failed."""
    results = probe(tmp_path, registries.good.url, "system-trust")
    detail = tls_detail(results, registries.good.url)
    assert detail.startswith("certificate verification failed"), detail
    assert "issuer certificate" in detail, detail


def test_certificate_of_another_ca(tmp_path: Path, pki: Pki, registries: Registries) -> None:
    """A certificate signed by a CA other than ca_file's fails verification: tls_error."""
    url = registries.unknown_ca.url
    results = probe(tmp_path, url, "other-ca", ca_file=str(pki.ca_file))
    detail = tls_detail(results, url)
    assert detail.startswith("certificate verification failed"), detail


def test_expired_certificate(tmp_path: Path, pki: Pki, registries: Registries) -> None:
    """An expired certificate from the trusted CA is tls_error, and the detail says expired."""
    url = registries.expired.url
    results = probe(tmp_path, url, "expired", ca_file=str(pki.ca_file))
    detail = tls_detail(results, url)
    assert detail.startswith("certificate verification failed"), detail
    assert "expired" in detail, detail


def test_wrong_host_name(tmp_path: Path, pki: Pki, registries: Registries) -> None:
    """A trusted certificate for wrong.example served at 127.0.0.1 is tls_error, and the detail
    says the name (here an IP address) does not match."""
    url = registries.wrong_host.url
    results = probe(tmp_path, url, "wrong-host", ca_file=str(pki.ca_file))
    detail = tls_detail(results, url)
    assert detail.startswith("certificate verification failed"), detail
    assert "mismatch" in detail.lower(), detail
    assert "127.0.0.1" in detail, detail


def test_tls_verify_false(tmp_path: Path, registries: Registries) -> None:
    """With tls_verify: false the pull from the unknown-CA server verifies every blob."""
    results = probe(tmp_path, registries.unknown_ca.url, "insecure", tls_verify=False)
    assert_verified(results)


def test_daemon_warns_when_tls_verify_is_off(tmp_path: Path, registries: Registries) -> None:
    """The daemon logs tls_verify_disabled naming the environment at start-up, and still pulls
    from the unknown-CA server."""
    document = catalog(registries.unknown_ca.url, IMAGES, tls_verify=False)
    document["environments"].append({"name": "verified", "url": registries.good.url})
    document["defaults"]["interval"] = "1s"
    factory = DaemonFactory(tmp_path / "daemon")
    (tmp_path / "daemon").mkdir()
    try:
        daemon = factory.start("insecure", document)
        warnings = daemon.events("tls_verify_disabled")
        assert [w.get("environment") for w in warnings] == ["local"], daemon.diagnostics()
        assert warnings[0]["level"] == "warning", warnings

        def pulled() -> None:
            _, state = daemon.get_json("/status")
            local = [i for i in state["images"] if i["environment"] == "local"]
            assert local, state
            assert all(image["ok"] is True for image in local), state

        eventually(pulled, timeout=30)
    finally:
        factory.stop_all()
