"""Authentication against the real registry: htpasswd Basic auth and the Bearer token flow."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary.testbed import LocalRegistry, TokenAuth, start_registry
from tests.conftest import catalog, probe_json, run_cli, seed_images, write_config
from tests.daemon_fixtures import DaemonFactory, eventually
from tests.token_issuer import TokenIssuer, TokenRequest

pytestmark = pytest.mark.registry

USER = "canary-robot"
PASSWORD = "pa55 w0rd:with-colon&$sign"
WRONG_PASSWORD = "not-the-password-4711"
PASSWORD_ENV = "CANARY_TEST_REGISTRY_PASSWORD"
SEED_ARGS = ("--layers", "1", "--layer-size", "1KiB")
# One plain image and one two-platform index: 1 + 4 blobs, 1 + 3 manifests to fetch.
IMAGES: list[dict[str, Any]] = [
    {"repository": "team/app", "tag": "v1"},
    {"repository": "canary/multi", "tag": "2024", "platforms": ["linux/amd64", "linux/arm64"]},
]
BLOBS_PER_IMAGE = {"team/app": 2, "canary/multi": 4}


def password_auth() -> dict[str, str]:
    return {"username": USER, "password_env": PASSWORD_ENV}


def password_env(password: str) -> dict[str, str]:
    return {PASSWORD_ENV: password}


def basic_credentials(password: str) -> str:
    return base64.b64encode(f"{USER}:{password}".encode()).decode("ascii")


def assert_all_verified(code: int, results: list[dict[str, Any]]) -> None:
    assert code == 0, json.dumps(results, indent=2)
    assert sorted(r["repository"] for r in results) == sorted(BLOBS_PER_IMAGE)
    for result in results:
        assert result["ok"] is True
        assert result["manifest"]["outcome"] == "ok"
        assert all(m["outcome"] == "ok" for m in result["platform_manifests"])
        assert len(result["blobs"]) == BLOBS_PER_IMAGE[result["repository"]]
        assert all(blob["outcome"] == "ok" for blob in result["blobs"]), result["blobs"]


def assert_all_unauthorized(code: int, results: list[dict[str, Any]]) -> None:
    assert code == 1, json.dumps(results, indent=2)
    assert len(results) == len(IMAGES)
    for result in results:
        assert result["ok"] is False
        assert result["outcome"] == "unauthorized"
        assert result["manifest"]["outcome"] == "unauthorized"
        assert result["manifest"]["evidence"]["status"] == 401
        assert result["blobs"] == []


def assert_no_secrets(done: subprocess.CompletedProcess[str], secrets: list[str]) -> None:
    output = done.stdout + done.stderr
    # The report must be there for its silence about secrets to mean anything.
    assert "team/app" in output
    for secret in secrets:
        assert secret
        assert secret not in output, f"a secret appears in the probe's output: {secret[:12]}…"


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    """An htpasswd file with USER and PASSWORD hashed with bcrypt, as distribution requires."""
    done = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith(f"{USER}:$2y$")
    path = tmp_path / "htpasswd"
    path.write_text(done.stdout)
    return path


@pytest.fixture
def basic_registry(tmp_path: Path, htpasswd: Path) -> Iterator[LocalRegistry]:
    """A registry that wants Basic credentials from its htpasswd file."""
    with start_registry(tmp_path / "registry", htpasswd=htpasswd) as running:
        yield running


@pytest.fixture
def basic_seeded(tmp_path: Path, basic_registry: LocalRegistry) -> Path:
    """The IMAGES pushed to the Basic-auth registry; returns a config with password_env."""
    config = write_config(tmp_path, catalog(basic_registry.url, IMAGES, auth=password_auth()))
    seed_images(config, *SEED_ARGS, env=password_env(PASSWORD))
    return config


class TestBasicAuth:
    def test_probe_with_password_env(self, basic_seeded: Path) -> None:
        """With the right password from the environment, every manifest and blob verifies."""
        code, results = probe_json(basic_seeded, env=password_env(PASSWORD))
        assert_all_verified(code, results)

    def test_registry_refuses_anonymous_pulls(
        self, tmp_path: Path, basic_registry: LocalRegistry, basic_seeded: Path
    ) -> None:
        """Without credentials the probe fails unauthorized, so the registry does check them."""
        config = write_config(tmp_path, catalog(basic_registry.url, IMAGES), "anonymous.yaml")
        code, results = probe_json(config)
        assert_all_unauthorized(code, results)

    def test_wrong_password_is_unauthorized(self, basic_seeded: Path) -> None:
        """With a wrong password the probe exits 1 and the manifest outcome is unauthorized."""
        code, results = probe_json(basic_seeded, env=password_env(WRONG_PASSWORD))
        assert_all_unauthorized(code, results)

    @pytest.mark.parametrize("key", ["{host}", "http://{host}", "http://{host}/v2/"])
    def test_docker_config_credentials(
        self, tmp_path: Path, basic_registry: LocalRegistry, basic_seeded: Path, key: str
    ) -> None:
        """A Kubernetes .dockerconfigjson with a base64 `auth` for the registry's host works."""
        host = f"127.0.0.1:{basic_registry.port}"
        auth = basic_credentials(PASSWORD)
        docker_config = tmp_path / ".dockerconfigjson"
        docker_config.write_text(json.dumps({"auths": {key.format(host=host): {"auth": auth}}}))
        document = catalog(basic_registry.url, IMAGES, auth={"docker_config": docker_config.name})
        config = write_config(tmp_path, document, "docker-config.yaml")
        done = run_cli("probe", "--config", str(config), "--format", "json")
        assert_all_verified(done.returncode, json.loads(done.stdout))
        assert_no_secrets(done, [PASSWORD, auth])

    def test_docker_config_wrong_password(
        self, tmp_path: Path, basic_registry: LocalRegistry, basic_seeded: Path
    ) -> None:
        """A .dockerconfigjson whose `auth` holds a wrong password gives unauthorized."""
        host = f"127.0.0.1:{basic_registry.port}"
        auth = basic_credentials(WRONG_PASSWORD)
        docker_config = tmp_path / ".dockerconfigjson"
        docker_config.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        document = catalog(basic_registry.url, IMAGES, auth={"docker_config": docker_config.name})
        config = write_config(tmp_path, document, "docker-config.yaml")
        code, results = probe_json(config)
        assert_all_unauthorized(code, results)

    @pytest.mark.parametrize("output_format", ["text", "json"])
    @pytest.mark.parametrize("password", [PASSWORD, WRONG_PASSWORD], ids=["right", "wrong"])
    def test_no_password_in_output(
        self, basic_seeded: Path, output_format: str, password: str
    ) -> None:
        """Neither the password nor the Basic credentials appear in stdout or stderr."""
        done = run_cli(
            "probe",
            "--config",
            str(basic_seeded),
            "--format",
            output_format,
            env=password_env(password),
        )
        assert done.returncode == (0 if password == PASSWORD else 1), done.stdout + done.stderr
        assert_no_secrets(
            done,
            [PASSWORD, WRONG_PASSWORD, basic_credentials(PASSWORD), basic_credentials(password)],
        )


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    """A token issuer on loopback that knows USER with PASSWORD."""
    with TokenIssuer(tmp_path / "issuer", {USER: PASSWORD}) as running:
        yield running


@pytest.fixture
def token_registry(tmp_path: Path, issuer: TokenIssuer) -> Iterator[LocalRegistry]:
    """A registry that trusts tokens signed by `issuer` and no others."""
    auth = TokenAuth(issuer.realm, issuer.service, issuer.issuer, issuer.certificate)
    with start_registry(tmp_path / "registry", token=auth) as running:
        yield running


@dataclass(frozen=True)
class TokenSeeded:
    """A config for the token registry, and the token requests the seed made."""

    config: Path
    seed_requests: list[TokenRequest]


@pytest.fixture
def token_seeded(tmp_path: Path, issuer: TokenIssuer, token_registry: LocalRegistry) -> TokenSeeded:
    """The IMAGES pushed through the token flow; the issuer's record starts empty afterwards."""
    config = write_config(tmp_path, catalog(token_registry.url, IMAGES, auth=password_auth()))
    seed_images(config, *SEED_ARGS, env=password_env(PASSWORD))
    requests = issuer.received()
    issuer.clear()
    return TokenSeeded(config, requests)


def pull_requests(issuer: TokenIssuer, repository: str) -> list[TokenRequest]:
    return [r for r in issuer.received() if r.scopes == (f"repository:{repository}:pull",)]


class TestBearerTokenAuth:
    def test_seed_pushes_with_push_scope(
        self, issuer: TokenIssuer, token_seeded: TokenSeeded
    ) -> None:
        """The seed asks the issuer once per repository for a pull,push token, as USER."""
        for image in IMAGES:
            scope = f"repository:{image['repository']}:pull,push"
            [request] = [r for r in token_seeded.seed_requests if scope in r.scopes]
            assert request.status == 200
            assert request.username == USER
            assert request.service == issuer.service
        assert len(token_seeded.seed_requests) == len(IMAGES), token_seeded.seed_requests

    def test_probe_through_token_flow(self, issuer: TokenIssuer, token_seeded: TokenSeeded) -> None:
        """The probe verifies everything with tokens asked for in each repository's pull scope."""
        code, results = probe_json(token_seeded.config, env=password_env(PASSWORD))
        assert_all_verified(code, results)
        for image in IMAGES:
            [request] = pull_requests(issuer, image["repository"])
            assert request.service == issuer.service
            assert request.username == USER
            assert request.status == 200

    def test_no_credentials_is_unauthorized(
        self,
        tmp_path: Path,
        issuer: TokenIssuer,
        token_registry: LocalRegistry,
        token_seeded: TokenSeeded,
    ) -> None:
        """Without credentials the issuer refuses a token and the probe fails unauthorized."""
        config = write_config(tmp_path, catalog(token_registry.url, IMAGES), "anonymous.yaml")
        code, results = probe_json(config)
        assert_all_unauthorized(code, results)
        assert issuer.received()
        assert all(r.status == 401 and r.username is None for r in issuer.received())

    def test_registry_refuses_forged_tokens(
        self, issuer: TokenIssuer, token_registry: LocalRegistry, token_seeded: TokenSeeded
    ) -> None:
        """Tokens signed by a key outside the rootcertbundle are refused: unauthorized."""
        issuer.untrusted = True
        code, results = probe_json(token_seeded.config, env=password_env(PASSWORD))
        assert_all_unauthorized(code, results)
        for result in results:
            # This time the registry refused, not the token endpoint.
            assert result["manifest"]["evidence"]["url"].startswith(token_registry.url)
        assert issuer.received()
        assert all(r.status == 200 for r in issuer.received())

    def test_registry_refuses_tokens_without_pull(
        self, issuer: TokenIssuer, token_registry: LocalRegistry, token_seeded: TokenSeeded
    ) -> None:
        """A valid token whose access lacks `pull` is refused by the registry: unauthorized."""
        issuer.grant = frozenset({"push"})
        code, results = probe_json(token_seeded.config, env=password_env(PASSWORD))
        assert_all_unauthorized(code, results)
        for result in results:
            assert result["manifest"]["evidence"]["url"].startswith(token_registry.url)

    def test_wrong_password_is_unauthorized(
        self, issuer: TokenIssuer, token_seeded: TokenSeeded
    ) -> None:
        """A wrong password is refused by the issuer; the probe exits 1 with unauthorized."""
        code, results = probe_json(token_seeded.config, env=password_env(WRONG_PASSWORD))
        assert_all_unauthorized(code, results)
        for result in results:
            # The evidence points at the token endpoint, the hop that refused.
            assert result["manifest"]["evidence"]["url"] == issuer.realm
        received = issuer.received()
        assert received
        assert all(r.status == 401 for r in received)

    def test_token_cached_per_repository(
        self, issuer: TokenIssuer, token_seeded: TokenSeeded
    ) -> None:
        """Each probe run asks once per repository for a pull token, not once per request."""
        for run in (1, 2):
            code, results = probe_json(token_seeded.config, env=password_env(PASSWORD))
            assert_all_verified(code, results)
            for image in IMAGES:
                assert len(pull_requests(issuer, image["repository"])) == run
            assert len(issuer.received()) == run * len(IMAGES), issuer.received()

    @pytest.mark.parametrize("output_format", ["text", "json"])
    @pytest.mark.parametrize("password", [PASSWORD, WRONG_PASSWORD], ids=["right", "wrong"])
    def test_no_password_or_token_in_output(
        self, issuer: TokenIssuer, token_seeded: TokenSeeded, output_format: str, password: str
    ) -> None:
        """Neither the password nor any token the issuer handed out appears in the output."""
        done = run_cli(
            "probe",
            "--config",
            str(token_seeded.config),
            "--format",
            output_format,
            env=password_env(password),
        )
        assert done.returncode == (0 if password == PASSWORD else 1), done.stdout + done.stderr
        tokens = [r.token for r in token_seeded.seed_requests + issuer.received() if r.token]
        if password == PASSWORD:
            assert tokens
        signatures = [token.rsplit(".", 1)[1] for token in tokens]
        assert_no_secrets(
            done,
            [PASSWORD, WRONG_PASSWORD, basic_credentials(password), *tokens, *signatures],
        )


@pytest.mark.parametrize("password", [PASSWORD, WRONG_PASSWORD], ids=["right", "wrong"])
def test_the_daemon_shows_no_secret_anywhere(
    basic_seeded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    """The status page, /status, /metrics and the log lines of a daemon pulling with Basic
    credentials (right or wrong) never contain the password or the encoded credentials."""
    monkeypatch.setenv(PASSWORD_ENV, password)
    document = yaml.safe_load(basic_seeded.read_text())
    document["defaults"] = {**document.get("defaults", {}), "interval": "1s"}
    factory = DaemonFactory(tmp_path / "daemon")
    (tmp_path / "daemon").mkdir()
    try:
        daemon = factory.start("canary", document)

        def pulled() -> None:
            _, state = daemon.get_json("/status")
            assert all(image["ok"] is not None for image in state["images"]), state

        eventually(pulled, timeout=30)
        outputs = [daemon.get(path)[1].decode() for path in ("/", "/status", "/metrics")]
    finally:
        factory.stop_all()
    outputs.append(daemon.stdout.read_text() + daemon.stderr.read_text())
    expected = "verified" if password == PASSWORD else "unauthorized"
    assert expected in outputs[0]  # the page is there for its silence to mean anything
    for output in outputs:
        assert "team/app" in output
        for secret in (PASSWORD, WRONG_PASSWORD, basic_credentials(PASSWORD)):
            assert secret not in output
        assert basic_credentials(password) not in output
